"""
Salt execution module for distsync: upload (and wait for the fleet), list, fleet status and
set up, over the distsync engine.

Each function is a thin call into the same engine functions the Ansible modules of the
``distsync.core`` collection call; none re-implements a step. An engine error
(``distsync.errors.DistsyncError``) becomes ``CommandExecutionError`` with the engine's
one-line message. Nothing returned carries a secret: versions are described by name,
version id, size and plaintext SHA-256, setups by paths, bucket and notes.

:depends: the distsync engine importable by Salt's own Python: ``salt-pip install
    <collection>/python`` (onedir Salt) or ``pip install <collection>/python`` into the
    environment Salt runs from. The module does not load otherwise, and says why.

CLI examples (masterless)::

    salt-call --local distsync.upload src=dist/app.tar.gz config=/etc/distsync/upload.toml
    salt-call --local distsync.list config=/etc/distsync/upload.toml name=app.tar.gz
    salt-call --local distsync.status config=/etc/distsync/upload.toml name=app.tar.gz
    salt-call --local distsync.setup storage=local bucket=/srv/shared/bucket
"""

import os
from pathlib import Path

from salt.exceptions import CommandExecutionError

try:
    import distsync
    from distsync.errors import DistsyncError

    ENGINE_IMPORT_ERROR = None
except ImportError as exc:  # the engine is not in Salt's Python
    distsync = None
    ENGINE_IMPORT_ERROR = str(exc)

# The file is not called distsync.py, like Salt's own dockermod.py: Salt's loader puts this
# directory on sys.path, where a distsync.py would stand in for the engine package.
__virtualname__ = "distsync"
__func_alias__ = {"list_": "list"}

# The same floor as the Ansible modules' import guard (plugins/module_utils/_engine.py).
MINIMUM_ENGINE_VERSION = (0, 1, 0)
ENGINE_HINT = (
    "install the distsync engine into Salt's Python "
    "(salt-pip install <collection>/python, or pip install it into Salt's environment)"
)


def _version_tuple(text):
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def __virtual__():
    if distsync is None:
        return (
            False,
            f"distsync: the engine is not importable ({ENGINE_IMPORT_ERROR}): {ENGINE_HINT}",
        )
    if _version_tuple(distsync.__version__) < MINIMUM_ENGINE_VERSION:
        wanted = ".".join(map(str, MINIMUM_ENGINE_VERSION))
        return (
            False,
            f"distsync: engine {distsync.__version__} is too old, {wanted} or later is "
            f"needed: {ENGINE_HINT}",
        )
    return __virtualname__


def _engine(action):
    """Call ``action()``; an engine error becomes CommandExecutionError(<its one line>)."""
    try:
        return action()
    except DistsyncError as exc:
        raise CommandExecutionError(str(exc)) from None


def _path(value):
    return os.path.expanduser(str(value))


def upload(
    src,
    config="~/.distsync",
    name=None,
    force=False,
    test=False,
    keep=None,
    wait=False,
    wait_servers=None,
    wait_timeout=600,
):
    """
    Encrypt ``src`` and upload it to the store ``config`` names, unless the newest version
    of the artifact already has the same plaintext SHA-256 (read from its authenticated
    manifest, never from an ETag or MD5).

    src
        The file to upload.
    config
        The uploader's configuration (written by ``distsync setup``). Default ``~/.distsync``.
    name
        The artifact name the servers install it under. Default: the base name of ``src``.
    force
        Upload a new version even when the content is unchanged.
    test
        Decide only: report what would be uploaded and pruned; upload, delete and wait for
        nothing.
    keep
        Then delete the stored contents of all but the newest ``keep`` versions of the
        artifact, like ``distsync upload --keep``: log entries stay, and a version a server
        reports installed or pinned is never deleted. With ``test`` nothing is deleted and
        the version ``test`` would upload counts among the ``keep``.
    wait
        Then wait until the servers report this version installed, like ``distsync upload
        --wait``: the servers missing or failed, and why, end it with an error.
    wait_servers
        With ``wait``, how many servers must report it installed. Default: every live
        server not pinned to another version.
    wait_timeout
        With ``wait``, give up after this many seconds. Default 600.

    Returns ``changed``, ``name``, ``version`` (the new version id; the existing one when
    unchanged; None when ``test`` would upload), ``size``, ``sha256``, ``previous`` (the
    newest version before, or None), with ``keep`` ``pruned`` (``deleted``: ``version`` and
    ``stored_bytes`` of each content deleted, or that would be; ``kept_for_fleet``:
    ``version`` and ``reason`` of each kept because a server has it installed or pinned) and
    with ``wait`` ``fleet`` (``installed``, ``wanted``, ``message``). ``changed`` is also
    true when only the prune deleted something.

    CLI Example:

    .. code-block:: bash

        salt-call --local distsync.upload src=dist/app-42.tar.gz name=app.tar.gz keep=5
    """
    from distsync.catalog import Catalog
    from distsync.config import load_config
    from distsync.upload import upload_if_changed

    def action():
        cfg = load_config(_path(config))
        catalog = Catalog.open(cfg)
        return upload_if_changed(
            cfg,
            catalog.store,
            catalog,
            Path(_path(src)),
            name=name,
            force=bool(force),
            dry_run=bool(test),
        )

    if keep is not None and int(keep) < 1:
        raise CommandExecutionError(
            "distsync: keep must be at least 1 (the newest version always stays)"
        )
    if wait:
        _check_wait(wait_servers, wait_timeout)
    outcome = _engine(action)
    facts = outcome.after
    result = dict(facts, changed=outcome.changed, previous=outcome.before)
    # The upload stands whatever follows; an error says so, so that a retry is not taken
    # for a first upload.
    done = "uploaded" if outcome.changed else "already had"
    if keep is not None:
        # With test, an upload that would happen is one more version to keep.
        incoming = 1 if test and outcome.changed else 0
        try:
            if outcome.before is None:
                # A first upload (done, or still to come with test): there is no older
                # version to prune, and with test the engine would not know the name yet.
                result["pruned"] = {"deleted": [], "kept_for_fleet": []}
            else:
                result["pruned"] = _prune(config, facts["name"], int(keep), bool(test), incoming)
        except CommandExecutionError as exc:
            if test:
                raise
            raise CommandExecutionError(
                f"{done} {facts['name']} version {facts['version']}, then: {exc}"
            ) from None
        result["changed"] = result["changed"] or bool(result["pruned"]["deleted"])
    if wait and not test:
        try:
            result["fleet"] = wait_for(
                facts["name"], facts["version"], config, wait_servers, wait_timeout
            )
        except CommandExecutionError as exc:
            raise CommandExecutionError(
                f"{done} {facts['name']} version {facts['version']}, then: {exc}"
            ) from None
    return result


def _prune(config, name, keep, test, incoming):
    """The engine's retention for one name, as the distsync_upload Ansible module returns
    it: ``deleted`` and ``kept_for_fleet``."""
    from distsync.catalog import Catalog
    from distsync.config import load_config
    from distsync.retention import prune

    def action():
        cfg = load_config(_path(config))
        return prune(
            cfg, Catalog.open(cfg), keep=keep, names=[name], dry_run=test, incoming=incoming
        )

    plan = _engine(action)
    return {
        "deleted": [
            {"version": v.version_id, "stored_bytes": v.manifest.object_size} for v in plan.delete
        ],
        "kept_for_fleet": [
            {"version": v.version_id, "reason": str(why)} for v, why in plan.kept_for_fleet
        ],
    }


def _check_wait(servers, timeout):
    if servers is not None and int(servers) < 1:
        raise CommandExecutionError("distsync: wait_servers must be at least 1")
    if float(timeout) <= 0:
        raise CommandExecutionError("distsync: wait_timeout must be more than 0 seconds")


def wait_for(name, version, config="~/.distsync", servers=None, timeout=600):
    """
    Wait until the servers report version ``version`` of ``name`` installed: the engine's
    ``upload --wait``. Returns ``installed``, ``wanted`` and ``message``; the servers
    missing or failed, and why, end it with an error.

    servers
        How many must report it installed. Default: every live server not pinned to
        another version.
    timeout
        Give up after this many seconds. Default 600.

    CLI Example:

    .. code-block:: bash

        salt-call --local distsync.wait_for app.tar.gz 42 servers=6 timeout=900
    """
    from distsync.config import load_config
    from distsync.logorder import parse_version_id
    from distsync.status import wait_for_upload
    from distsync.storage import open_store

    _check_wait(servers, timeout)
    seq = parse_version_id(str(version))
    if seq is None:
        raise CommandExecutionError(
            "distsync.wait_for: a version id is what `distsync list` shows (e.g. 42 or "
            f"42.9f3ac2e07b5d), not {version!r}"
        )

    def action():
        cfg = load_config(_path(config))
        return wait_for_upload(
            cfg,
            open_store(cfg),
            name,
            seq,
            servers=None if servers is None else int(servers),
            timeout=float(timeout),
        )

    verdict = _engine(action)
    return {"installed": verdict.reached, "wanted": verdict.wanted, "message": verdict.message}


def status(name=None, config="~/.distsync", version=None):
    """
    What the servers report (their sealed status records), as ``distsync status --json``
    gives it: ``servers`` (each with its name, groups, state - live, stale or stopped -,
    last_seen and per artifact the version installed, failures and marks) and
    ``artifacts`` (per name: the version counted, how many servers have it, which are
    failed, pinned, retrying or behind, and a one-line summary).

    name
        Only this artifact.
    config
        A distsync configuration (the uploader's or a server's). Default ``~/.distsync``.
    version
        With ``name``: count this version id instead of the newest.

    CLI Example:

    .. code-block:: bash

        salt-call --local distsync.status name=app.tar.gz
    """
    from distsync.config import load_config
    from distsync.logorder import parse_version_id
    from distsync.status import read_fleet
    from distsync.storage import open_store

    seq = None
    if version is not None:
        seq = parse_version_id(str(version))
        if name is None or seq is None:
            raise CommandExecutionError(
                "distsync.status: version goes with a name, and is a version id as "
                "`distsync list` shows (e.g. 42 or 42.9f3ac2e07b5d)"
            )

    def action():
        cfg = load_config(_path(config))
        return read_fleet(cfg, open_store(cfg)).to_json(name, seq)

    return _engine(action)


def list_(name=None, config="~/.distsync"):
    """
    The artifact versions in the store ``config`` names, newest first, each with
    ``name``, ``version``, ``size``, ``sha256``, ``uploaded_at``, ``uploader``, ``mode`` and
    ``pruned`` (its content was deleted by ``distsync prune`` or ``keep=``).

    name
        Only the versions of this artifact.
    config
        A distsync configuration. Default ``~/.distsync``.

    CLI Example:

    .. code-block:: bash

        salt-call --local distsync.list name=app.tar.gz
    """
    from distsync.catalog import Catalog
    from distsync.config import load_config
    from distsync.retention import present_objects

    def action():
        catalog = Catalog.open(load_config(_path(config)))
        found = [v for v in catalog.versions() if name in (None, v.manifest.name)]
        # As distsync_info: a version whose content was pruned is listed, marked pruned.
        present = present_objects(catalog) if found else None
        return [
            dict(v.facts(), pruned=present is not None and v.manifest.object_key not in present)
            for v in found
        ]

    return _engine(action)


def setup(
    storage="local",
    bucket=None,
    output_dir="~/distsync",
    upload_config="~/.distsync",
    daemon_config="~/.distsyncd",
    setup_id=None,
    region=None,
    endpoint=None,
    profile=None,
    prefix=None,
    force=False,
    test=False,
):
    """
    Create a store and write the uploader's and the daemon's configs (both 0600, one fresh
    shared secret), unless both are already in place as asked: the same engine call as the
    ``distsync_setup`` Ansible module. ``force`` replaces the configs (a new secret).

    storage
        ``local`` (a directory plays the bucket) or ``s3`` (a bucket and two least-privilege
        IAM users; ``setup_id`` required, so that a second run finds what the first made).
    test
        Decide only, with read-only calls.

    Returns ``changed``, ``storage``, ``bucket``, ``setup_id``, ``upload_config``,
    ``daemon_config``, ``notes`` (never a secret) and ``public_key``: the public key of the
    uploader's new ``SigningKey``, the daemons' ``TrustedSigners`` (pillar
    ``trusted_signers``); None in a test run that would make one.

    CLI Example:

    .. code-block:: bash

        salt-call --local distsync.setup storage=local bucket=/srv/shared/bucket \
            output_dir=/srv/distsync
    """
    from distsync.provision import SetupOptions, ensure_setup

    storage = str(storage).lower()
    if storage not in ("local", "s3"):
        # Swift's credentials and ACL options are the CLI's and the Ansible module's for now.
        raise CommandExecutionError(
            f"distsync.setup: storage must be local or s3, not {storage!r} "
            "(for swift: distsync setup --storage swift, or the distsync_setup Ansible module)"
        )
    if storage == "s3" and not setup_id:
        raise CommandExecutionError("distsync.setup: storage=s3 needs setup_id")
    options = SetupOptions(
        storage=storage,
        bucket=bucket,
        region=region,
        endpoint=endpoint,
        output_dir=_path(output_dir),
        upload_config=_path(upload_config),
        daemon_config=_path(daemon_config),
        force=bool(force),
        setup_id=setup_id,
        prefix=prefix,
        profile=profile,
    )
    report = _engine(lambda: ensure_setup(options, dry_run=bool(test)))
    return {
        "changed": report.changed,
        "storage": report.storage,
        "bucket": report.bucket,
        "setup_id": report.setup_id,
        "upload_config": report.upload_config,
        "daemon_config": report.daemon_config,
        "notes": list(report.notes),
        "public_key": report.public_key,
    }


def remove_setup(
    upload_config="~/.distsync",
    daemon_config="~/.distsyncd",
    storage="local",
    setup_id=None,
    region=None,
    endpoint=None,
    profile=None,
    bucket=None,
    delete_bucket=False,
    test=False,
):
    """
    Remove both configs and, for ``storage=s3``, the setup's IAM users, keys and policies
    (with ``delete_bucket=True`` also the bucket and every version in it).

    Returns ``changed`` and ``removed`` (paths and resource names).

    CLI Example:

    .. code-block:: bash

        salt-call --local distsync.remove_setup storage=s3 setup_id=prod delete_bucket=True
    """
    from distsync.provision import DestroyOptions, ensure_absent

    destroy = None
    if str(storage).lower() == "s3":
        if not setup_id:
            raise CommandExecutionError("distsync.remove_setup: storage=s3 needs setup_id")
        destroy = DestroyOptions(
            setup_id=setup_id,
            region=region,
            endpoint=endpoint,
            profile=profile,
            bucket=bucket,
            delete_bucket=bool(delete_bucket),
        )
    configs = [_path(upload_config), _path(daemon_config)]
    report = _engine(lambda: ensure_absent(configs, destroy=destroy, dry_run=bool(test)))
    return {"changed": report.changed, "removed": list(report.removed)}
