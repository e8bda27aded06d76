"""
Salt states for distsync: an artifact uploaded, a setup in place.

Thin over the ``distsync`` execution module (itself thin over the engine). ``test=True``
is honest: nothing is written, and ``changes`` shows what a real run would do.

.. code-block:: yaml

    app.tar.gz:
      distsync.uploaded:
        - src: /builds/app-42.tar.gz
        - config: /etc/distsync/upload.toml

    /etc/distsync/upload.toml:
      distsync.setup:
        - daemon_config: /etc/distsync/distsyncd.toml
        - storage: local
        - bucket: /srv/shared/distsync-bucket
        - output_dir: /srv/distsync
"""

from salt.exceptions import CommandExecutionError

# Not distsync.py, for the reason given in _modules/distsyncmod.py.
__virtualname__ = "distsync"


def __virtual__():
    if "distsync.upload" in __salt__:
        return __virtualname__
    return (
        False,
        "distsync states need the distsync execution module (and so the engine in Salt's Python)",
    )


def _ret(name):
    return {"name": name, "result": False, "changes": {}, "comment": ""}


def _version_view(facts):
    """What changes show of a version: never more than name, version, size and SHA-256."""
    if not facts:
        return None
    return {key: facts.get(key) for key in ("version", "size", "sha256")}


def uploaded(
    name, src, config="~/.distsync", force=False, wait=False, wait_servers=None, wait_timeout=600
):
    """
    The newest version of the artifact ``name`` has the content of ``src``; otherwise
    ``src`` is encrypted and uploaded as its new version (idempotent by the plaintext
    SHA-256 in the authenticated manifest).

    name
        The artifact name the servers install it under.
    src
        The file to upload.
    config
        The uploader's configuration. Default ``~/.distsync``.
    force
        Upload a new version even when the content is unchanged (never idempotent).
    wait
        Then wait until the servers report the version installed (``wait_servers`` of them,
        default every live one; at most ``wait_timeout`` seconds): the state fails, naming
        the servers missing or failed, when they do not. Also when nothing was uploaded.
    """
    ret = _ret(name)
    test = bool(__opts__.get("test"))
    too_few = wait_servers is not None and int(wait_servers) < 1
    if wait and (too_few or float(wait_timeout) <= 0):
        # Before anything is uploaded, as distsync.upload and the CLI check them.
        ret["comment"] = "wait_servers must be at least 1 and wait_timeout more than 0 seconds"
        return ret
    try:
        out = __salt__["distsync.upload"](src=src, config=config, name=name, force=force, test=test)
    except CommandExecutionError as exc:
        ret["comment"] = str(exc)
        return ret
    if not out["changed"]:
        ret["result"] = True
        ret["comment"] = (
            f"{name} version {out['version']} already has this content (sha256 {out['sha256']})"
        )
    elif test:
        ret["changes"] = {"old": _version_view(out["previous"]), "new": _version_view(out)}
        ret["result"] = None
        ret["comment"] = (
            f"{src} would be uploaded as {name} ({out['size']} bytes, sha256 {out['sha256']})"
        )
        return ret
    else:
        ret["changes"] = {"old": _version_view(out["previous"]), "new": _version_view(out)}
        ret["result"] = True
        ret["comment"] = f"{src} uploaded as {name} version {out['version']}"
    if wait and not test:
        # After the upload, which stands (and shows in changes) whatever the wait finds.
        try:
            fleet = __salt__["distsync.wait_for"](
                name, out["version"], config=config, servers=wait_servers, timeout=wait_timeout
            )
        except CommandExecutionError as exc:
            ret["result"] = False
            ret["comment"] += f"; then: {exc}"
            return ret
        ret["comment"] += f"; {fleet['message']}"
    return ret


def setup(
    name,
    daemon_config="~/.distsyncd",
    storage="local",
    bucket=None,
    output_dir="~/distsync",
    setup_id=None,
    region=None,
    endpoint=None,
    profile=None,
    prefix=None,
    force=False,
):
    """
    A distsync store and its two configs (mode 0600, one shared secret) are in place:
    ``name``, the uploader's config, and ``daemon_config``, the servers'. Configs that
    exist but differ from what is asked are refused, never replaced, unless ``force``
    (which writes a new secret: existing artifacts become unreadable to the new configs).

    storage
        ``local`` (``bucket`` is a directory) or ``s3`` (``setup_id`` required).
    """
    ret = _ret(name)
    test = bool(__opts__.get("test"))
    try:
        out = __salt__["distsync.setup"](
            storage=storage,
            bucket=bucket,
            output_dir=output_dir,
            upload_config=name,
            daemon_config=daemon_config,
            setup_id=setup_id,
            region=region,
            endpoint=endpoint,
            profile=profile,
            prefix=prefix,
            force=force,
            test=test,
        )
    except CommandExecutionError as exc:
        ret["comment"] = str(exc)
        return ret
    where = f"{out['storage']} store {out['bucket'] or ''}".rstrip()
    if not out["changed"]:
        ret["result"] = True
        ret["comment"] = f"{out['upload_config']} and {out['daemon_config']} are in place ({where})"
        return ret
    ret["changes"] = {
        "upload_config": out["upload_config"],
        "daemon_config": out["daemon_config"],
        "store": where,
    }
    if out["notes"]:
        ret["changes"]["notes"] = out["notes"]
    if test:
        ret["result"] = None
        ret["comment"] = f"{where} and both configs would be set up"
        return ret
    ret["result"] = True
    ret["comment"] = f"set up {where}; wrote {out['upload_config']} and {out['daemon_config']}"
    return ret


def setup_absent(
    name,
    daemon_config="~/.distsyncd",
    storage="local",
    setup_id=None,
    region=None,
    endpoint=None,
    profile=None,
    bucket=None,
    delete_bucket=False,
):
    """
    Both configs are gone (``name`` and ``daemon_config``) and, for ``storage=s3``, the
    setup's IAM users, keys and policies (and with ``delete_bucket`` the bucket).
    """
    ret = _ret(name)
    test = bool(__opts__.get("test"))
    try:
        out = __salt__["distsync.remove_setup"](
            upload_config=name,
            daemon_config=daemon_config,
            storage=storage,
            setup_id=setup_id,
            region=region,
            endpoint=endpoint,
            profile=profile,
            bucket=bucket,
            delete_bucket=delete_bucket,
            test=test,
        )
    except CommandExecutionError as exc:
        ret["comment"] = str(exc)
        return ret
    if not out["changed"]:
        ret["result"] = True
        ret["comment"] = "nothing to remove"
        return ret
    ret["changes"] = {"removed": out["removed"]}
    ret["result"] = None if test else True
    ret["comment"] = ("would remove " if test else "removed ") + (
        ", ".join(out["removed"]) or "the S3 setup"
    )
    return ret
