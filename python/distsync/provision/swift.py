"""``--storage swift``: the three containers, their ACLs, and the two configs.

Setup logs in as the identity the uploader config will keep (an account admin: it creates
containers and sets their ACLs). Given a second identity (``--daemon-user``: a tempauth user
without ``.admin``, or a Keystone user without the operator role), the daemon config gets that
one, with container ACLs that let it read everything and write only the ``_daemons``
container (its peer and status records). Setup then checks those claims by *doing* them as
the daemon: it must read and list, write a record, and be refused when it writes to the log.

Swift's ACLs are per container and per identity; docs/setup-swift.md says what they cannot
restrict compared with IAM. ``container_acls`` is the pure decision; the rest is I/O.

With ``--storage swift+bittorrent`` setup also makes the daemons' web seed: it sets the
account's ``Temp-URL-Key`` (when the account has none), signs one TempURL for GET of every key
under the artifacts' prefix, proves it by fetching an object through it, and seals it into the
store record (``store_record.TempUrlGrant``). The daemons never get the key itself: with it they
could sign a PUT or a DELETE of any object in the account.
"""

from __future__ import annotations

import functools
import secrets
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from distsync.config import Config, SwiftCreds
from distsync.crypto.secret import generate_secret
from distsync.errors import DistsyncError, NotFoundError, StorageError, UsageError
from distsync.layout import Layout
from distsync.provision.aws_policies import new_setup_id, normalize_prefix
from distsync.provision.configs import refuse_overwrite
from distsync.provision.options import Say, SetupOptions, SetupResult, SwiftSetup
from distsync.provision.record import (
    probe_capabilities,
    refuse_existing_store,
    write_configs_and_record,
)
from distsync.storage.swift import (
    DAEMONS_SUFFIX,
    SEGMENTS_SUFFIX,
    SwiftStore,
    connector_for,
)
from distsync.store_record import TempUrlGrant

__all__ = [
    "container_acls",
    "creds_table",
    "run_swift_setup",
    "swift_in_place",
    "swift_setup_from_environment",
    "validate_container",
]

DEFAULT_PREFIX = "distsync/v3/"
# How long the web seed's TempURL lasts: a fleet outlives most certificates.
TEMP_URL_LIFETIME = 5 * 365 * 86400
_TEMP_URL_KEY = "x-account-meta-temp-url-key"
_MAX_CONTAINER = 256  # bytes, Swift's default limit
_READ, _WRITE = "x-container-read", "x-container-write"


def swift_setup_from_environment(swift: SwiftSetup, environ: Mapping[str, str]) -> None:
    """Fill in what flags left out from the variables the ``swift`` and ``openstack``
    clients read: ``OS_*`` (Keystone v3) or ``ST_AUTH``/``ST_USER``/``ST_KEY`` (v1), and the
    daemon identity's secret from ``DISTSYNC_SWIFT_DAEMON_KEY``. Secrets never go on a
    command line, where every user of the host could read them."""
    keystone = bool(environ.get("OS_USERNAME") or swift.project_name)
    if keystone:
        swift.auth_url = swift.auth_url or environ.get("OS_AUTH_URL")
        swift.username = swift.username or environ.get("OS_USERNAME")
        swift.key = swift.key or environ.get("OS_PASSWORD")
        swift.project_name = swift.project_name or environ.get("OS_PROJECT_NAME")
        swift.user_domain_name = swift.user_domain_name or environ.get("OS_USER_DOMAIN_NAME")
        swift.project_domain_name = swift.project_domain_name or environ.get(
            "OS_PROJECT_DOMAIN_NAME"
        )
        swift.region = swift.region or environ.get("OS_REGION_NAME")
    else:
        swift.auth_url = swift.auth_url or environ.get("ST_AUTH")
        swift.username = swift.username or environ.get("ST_USER")
        swift.key = swift.key or environ.get("ST_KEY")
    swift.daemon_key = swift.daemon_key or environ.get("DISTSYNC_SWIFT_DAEMON_KEY")


def validate_container(name: str) -> str:
    if not name or "/" in name or len((name + DAEMONS_SUFFIX).encode()) > _MAX_CONTAINER:
        raise UsageError(
            f"container name {name!r} must be non-empty, without '/', and at most "
            f"{_MAX_CONTAINER - len(DAEMONS_SUFFIX)} bytes (setup adds {DAEMONS_SUFFIX})"
        )
    return name


def _creds(swift: SwiftSetup, *, daemon: bool) -> SwiftCreds:
    """The SwiftCreds of the uploader (``daemon=False``) or of the daemon identity."""
    username = swift.daemon_username if daemon else swift.username
    key = swift.daemon_key if daemon else swift.key
    where = "--daemon-user" if daemon else "--username (or ST_USER / OS_USERNAME)"
    if not swift.auth_url:
        raise UsageError("--storage swift needs --auth-url (or ST_AUTH / OS_AUTH_URL)")
    if not username:
        raise UsageError(f"--storage swift needs {where}")
    if not key:
        secret_from = (
            "DISTSYNC_SWIFT_DAEMON_KEY"
            if daemon
            else ("OS_PASSWORD" if swift.project_name else "ST_KEY")
        )
        raise UsageError(f"no key or password for {username}: set {secret_from}")
    if swift.project_name:
        return SwiftCreds(
            auth_url=swift.auth_url,
            username=username,
            password=key,
            project_name=swift.project_name,
            user_domain_name=swift.user_domain_name or "Default",
            project_domain_name=swift.project_domain_name or "Default",
            region=swift.region,
        )
    return SwiftCreds(auth_url=swift.auth_url, username=username, api_key=key)


def creds_table(creds: SwiftCreds) -> dict[str, str]:
    """``[SwiftCreds]`` as the configs hold it."""
    table = {"AuthURL": creds.auth_url, "Username": creds.username}
    if creds.keystone:
        table.update(
            Password=str(creds.password),
            ProjectName=str(creds.project_name),
            UserDomainName=creds.user_domain_name,
            ProjectDomainName=creds.project_domain_name,
        )
        if creds.region:
            table["Region"] = creds.region
    else:
        table["APIKey"] = str(creds.api_key)
    return table


def container_acls(container: str, daemon: str | None) -> dict[str, dict[str, str]]:
    """Container -> the ACL headers it gets. ``daemon`` is the daemon identity's referent
    (None: the daemons share the uploader's identity, and only account admins get in).

    The daemon reads all three containers (the log, the artifacts and their segments, the
    other daemons' records) and writes only the ``_daemons`` container."""
    reader = daemon or ""
    return {
        container: {_READ: reader, _WRITE: ""},
        container + SEGMENTS_SUFFIX: {_READ: reader, _WRITE: ""},
        container + DAEMONS_SUFFIX: {_READ: reader, _WRITE: reader},
    }


def _store(creds: SwiftCreds, container: str, prefix: str) -> SwiftStore:
    return SwiftStore(connector_for(creds, "setup"), container, prefix=prefix)


def _apply_acls(store: SwiftStore, acls: dict[str, dict[str, str]], say: Say) -> bool:
    """Create the containers (PUT is idempotent) and set their ACLs; True if anything
    changed."""
    changed = False
    for name, headers in acls.items():
        existing = _container_headers(store, name)
        if existing is None:
            store.call("create container", name, functools.partial(_put_container, name=name))
            say(f"created container {name}")
            existing = {}
        wanted = {k: v for k, v in headers.items() if existing.get(k, "") != v}
        if wanted:
            store.call(
                "set the ACLs of",
                name,
                functools.partial(_post_container, name=name, headers=wanted),
            )
            changed = True
    return changed


def _put_container(conn: Any, *, name: str) -> None:
    conn.put_container(name)


def _post_container(conn: Any, *, name: str, headers: dict[str, str]) -> None:
    conn.post_container(name, headers)


def _container_headers(store: SwiftStore, name: str) -> dict[str, str] | None:
    """A container's headers (lower-case), None if it does not exist."""
    try:
        head = store.call("check container", name, lambda conn: conn.head_container(name))
    except NotFoundError:
        return None
    return {str(k).lower(): str(v) for k, v in head.items()}


def _check_daemon_access(daemon: SwiftStore, prefix: str) -> None:
    """Prove the ACLs by using them: the daemon lists and reads, writes a record, and is
    refused when it writes where only the uploader may."""
    list(daemon.list_after(prefix + "log/", ""))
    probe = f"{prefix}peers/setup-check-{uuid.uuid4().hex}"
    daemon.put(probe, b"")
    daemon.delete(probe)
    forbidden = f"{prefix}log/setup-check-{uuid.uuid4().hex}"
    try:
        daemon.put(forbidden, b"")
    except StorageError as exc:
        if "access denied" in str(exc):
            return
        raise
    daemon.delete(forbidden)
    raise StorageError(
        f"{daemon.description}: the daemon identity {daemon.identity()} can write the log: "
        "it has more than the container ACLs grant (an account admin, or a Keystone "
        "operator role); give the daemons an identity without it"
    )


def _post_account(conn: Any, *, headers: dict[str, str]) -> None:
    conn.post_account(headers)


def temp_url_grant(store: SwiftStore, prefix: str, say: Say) -> TempUrlGrant:
    """Sign the web seed's TempURL: GET of every key under ``{prefix}objects/`` in the
    store's container, for ``TEMP_URL_LIFETIME``; checked by fetching an object with it."""
    from swiftclient.utils import generate_temp_url

    head = store.call("read the account of", "", lambda conn: conn.head_account())
    key = {str(k).lower(): str(v) for k, v in head.items()}.get(_TEMP_URL_KEY)
    if key:
        say("signing the web seed's TempURL with the account's Temp-URL-Key")
    else:
        key = secrets.token_urlsafe(32)
        store.call(
            "set the Temp-URL-Key of the account of",
            "",
            functools.partial(_post_account, headers={"X-Account-Meta-Temp-URL-Key": key}),
        )
        say("set the account's Temp-URL-Key (for the web seed's TempURL)")
    container_path = urlsplit(store.storage_url()).path + "/" + store.container
    key_prefix = prefix + "objects/"
    expires = int(time.time()) + TEMP_URL_LIFETIME
    signed = generate_temp_url(
        f"{container_path}/{key_prefix}", expires, key, "GET", absolute=True, prefix=True
    )
    grant = TempUrlGrant(
        container_path, key_prefix, parse_qs(urlsplit(signed).query)["temp_url_sig"][0], expires
    )
    _check_temp_url(store, grant)
    return grant


def _check_temp_url(store: SwiftStore, grant: TempUrlGrant) -> None:
    """Fetch an object through the grant, with no login, as libtorrent will."""
    probe = f"{grant.key_prefix}setup-check-{uuid.uuid4().hex}"
    body = b"distsync web seed check"
    store.put(probe, body)
    try:
        store.use_temp_url(grant)
        url = store.presign(probe, 0)
        try:
            with urllib.request.urlopen(url, timeout=30) as answer:
                fetched = answer.read(len(body) + 1)
        except urllib.error.HTTPError as exc:
            raise StorageError(
                f"{store.description}: a TempURL for the web seed was refused (HTTP "
                f"{exc.code}): the proxy needs the tempurl middleware in its pipeline, "
                "allowing GET with HMAC-SHA256 (docs/setup-swift.md)"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            raise StorageError(
                f"{store.description}: cannot fetch through the web seed's TempURL: "
                f"{getattr(exc, 'reason', exc)}"
            ) from None
        if fetched != body:
            raise StorageError(f"{store.description}: the web seed's TempURL returned other bytes")
    finally:
        store.use_temp_url(None)
        store.delete(probe)


def run_swift_setup(
    options: SetupOptions,
    upload_path: Path,
    daemon_path: Path,
    output_dir: str,
    say: Say,
    warn: Say,
) -> SetupResult:
    swift = options.swift
    uploader_creds = _creds(swift, daemon=False)
    daemon_creds = _creds(swift, daemon=True) if swift.daemon_username else None
    container = validate_container(options.bucket or f"distsync-{new_setup_id()}")
    prefix = normalize_prefix(options.prefix) if options.prefix else DEFAULT_PREFIX
    # Before any change: a refusal here must not leave containers behind.
    refuse_overwrite(options, upload_path, daemon_path)
    uploader = _store(uploader_creds, container, prefix)
    referent = None
    daemon = None
    if daemon_creds is not None:
        daemon = _store(daemon_creds, container, prefix)
        referent = daemon.identity()  # a wrong daemon key fails here, before any change
        if referent == uploader.identity():
            raise UsageError("--daemon-user names the uploader's own identity")
    say(f"setup as {uploader_creds.username} at {uploader.description}")
    notes: list[str] = []
    existing = _container_headers(uploader, container) is not None
    if existing:
        refuse_existing_store(options, uploader, Layout(prefix))
    _apply_acls(uploader, container_acls(container, referent), say)
    if existing and next(iter(uploader.list_after(prefix + "log/", "")), None):
        notes.append(
            f"container {container} already holds a log under {prefix} from an earlier "
            "setup; the new SharedSecret cannot read it (daemons skip it with a warning)"
        )
    if daemon is not None:
        _check_daemon_access(daemon, prefix)
        say(f"checked: {referent} reads, writes its records, and may not write the log")
    else:
        notes.append(
            "the daemon config carries the uploader's credentials (no --daemon-user): give "
            "the daemons a read-only identity of their own (docs/setup-swift.md)"
        )
    bittorrent = (options.storage or "").lower() == "swift+bittorrent"
    grant = temp_url_grant(uploader, prefix, say) if bittorrent else None
    common: dict[str, Any] = {
        "SharedSecret": generate_secret(),
        "StorageBucket": container,
        "Storage": "Swift+BitTorrent" if bittorrent else "Swift",
        "Prefix": prefix.rstrip("/"),
    }
    write_configs_and_record(
        options,
        uploader,
        Layout(prefix),
        probe_capabilities(uploader, Layout(prefix), say),
        (upload_path, dict(common, SwiftCreds=creds_table(uploader_creds))),
        (
            daemon_path,
            dict(
                common,
                OutputDir=output_dir,
                SwiftCreds=creds_table(daemon_creds or uploader_creds),
            ),
        ),
        temp_url=grant,
    )
    return SetupResult(
        "swift+bittorrent" if bittorrent else "swift", container, upload_path, daemon_path, notes
    )


def swift_in_place(options: SetupOptions, uploader: Config, daemon: Config) -> bool:
    """Both configs name the requested container and identities, and the containers exist
    with the ACLs this version would give them (read-only calls as the uploader)."""
    swift = options.swift
    if not options.bucket or uploader.swift is None or daemon.swift is None:
        return False
    wanted_daemon = swift.daemon_username or swift.username
    wanted_storage = "Swift+BitTorrent" if options.storage == "swift+bittorrent" else "Swift"
    if not (
        uploader.storage == daemon.storage == wanted_storage
        and uploader.storage_bucket == daemon.storage_bucket == options.bucket
        and uploader.swift.auth_url == daemon.swift.auth_url == swift.auth_url
        and uploader.swift.username == swift.username
        and daemon.swift.username == wanted_daemon
    ):
        return False
    try:
        store = SwiftStore(
            connector_for(uploader.swift, uploader.path), options.bucket, prefix=uploader.prefix
        )
        referent = None
        if swift.daemon_username:
            referent = SwiftStore(
                connector_for(daemon.swift, daemon.path), options.bucket
            ).identity()
        for name, headers in container_acls(options.bucket, referent).items():
            existing = _container_headers(store, name)
            if existing is None or any(existing.get(k, "") != v for k, v in headers.items()):
                return False
    except DistsyncError:
        return False
    return True
