"""Configuration files (TOML) in the seed's shape, plus the Go original's variants.

The seed's keys keep their names and meaning; the Go version's ``[Aws]`` table and its
``OutputDir`` key load too. Every problem becomes one ConfigError naming the file, the key and
what is wrong. The README's configuration reference documents each key of ``KEYS``; a test
keeps the two in step.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import socket
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from distsync import plugins
from distsync.crypto.secret import InvalidSecret, parse_secret
from distsync.crypto.signing import InvalidKey, SigningKey, parse_key
from distsync.errors import ConfigError
from distsync.logorder import parse_version_id, version_id
from distsync.release.config import ReleaseSpec, parse_releases
from distsync.signed import Trust

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on older Pythons only
    import tomli as tomllib

__all__ = [
    "AWS_KEYS",
    "DEFAULT_DAEMON_CONFIG",
    "DEFAULT_UPLOAD_CONFIG",
    "KEYS",
    "SWIFT_KEYS",
    "AwsCreds",
    "Config",
    "SwiftCreds",
    "default_config_path",
    "load_config",
]

log = logging.getLogger(__name__)

DEFAULT_UPLOAD_CONFIG = "~/.distsync"
DEFAULT_DAEMON_CONFIG = "~/.distsyncd"

ENCRYPT_CHOICES = ("AEAD_AES_128_CBC_HMAC_SHA_256",)
# Storage, Notify and the transfer after "+" in Storage name plugins (distsync.plugins).

# Top-level keys and their TOML types; tables are handled separately.
KEYS: dict[str, tuple[type, ...]] = {
    "SharedSecret": (str,),
    "StorageBucket": (str,),
    "Encrypt": (str,),
    "Notify": (str,),
    "Storage": (str,),
    "OutputDir": (str,),
    "StateDir": (str,),
    "Prefix": (str,),
    "PollInterval": (int, float),
    "PollJitter": (int, float),
    "OnUpdate": (str, list),
    "HookTimeout": (int, float),
    "ChunkSize": (int,),
    "Uploader": (str,),
    "Pin": (dict,),
    "Release": (list,),
    "ModeMask": (int,),
    "TorrentPort": (int,),
    "TorrentAddress": (str,),
    "TorrentSeedSeconds": (int, float),
    "TorrentS3Readers": (int,),
    "TorrentWebSeedDelay": (int, float),
    "TorrentStallSeconds": (int, float),
    "TrackerURL": (str,),
    "NodeName": (str,),
    "Groups": (list,),
    "Names": (list,),
    "StatusInterval": (int, float),
    "MetricsAddress": (str,),
    "MetricsTextfile": (str,),
    "AwsCreds": (dict,),
    "Aws": (dict,),
    "PeerDist": (dict,),
    "SwiftCreds": (dict,),
    "SigningKey": (str,),
    "TrustedSigners": (list,),
    "Plugin": (dict,),
}
AWS_KEYS: dict[str, tuple[type, ...]] = {
    "Region": (str,),
    "AccessKey": (str,),
    "SecretKey": (str,),
    "SessionToken": (str,),
    "Endpoint": (str,),
}
SWIFT_KEYS: dict[str, tuple[type, ...]] = {
    "AuthURL": (str,),
    "Username": (str,),
    "APIKey": (str,),
    "Password": (str,),
    "ProjectName": (str,),
    "UserDomainName": (str,),
    "ProjectDomainName": (str,),
    "Region": (str,),
}
_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    list: "a list",
    dict: "a table",
}


@dataclass(frozen=True)
class AwsCreds:
    region: str = "us-east-1"
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    endpoint: str | None = None


@dataclass(frozen=True)
class SwiftCreds:
    """``[SwiftCreds]``: tempauth / Rackspace v1 (``api_key``) or Keystone v3 (``password``)."""

    auth_url: str
    username: str
    api_key: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    project_name: str | None = None
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    region: str | None = None

    @property
    def keystone(self) -> bool:
        return self.password is not None


@dataclass(frozen=True)
class Config:
    """A loaded, validated configuration. ``secret`` holds the 32 raw SharedSecret bytes."""

    path: Path
    secret: bytes = field(repr=False)
    storage_bucket: str
    encrypt: str = ENCRYPT_CHOICES[0]
    notify: str = "S3Poll"
    storage: str = "S3"
    aws: AwsCreds = AwsCreds()
    output_dir: Path | None = None
    state_dir: Path | None = None
    prefix: str = "distsync/v3/"
    poll_interval: float = 15.0
    poll_jitter: float = 5.0
    on_update: tuple[str, ...] = ()
    hook_timeout: float = 300.0
    chunk_size: int = 1 << 20
    uploader: str = field(default_factory=socket.gethostname)
    pins: Mapping[str, str] = field(default_factory=dict)
    # The daemon installs each artifact with its uploaded mode & mode_mask.
    mode_mask: int = 0o777
    # Storage = "S3+BitTorrent" or "Swift+BitTorrent" (docs/bittorrent.md).
    torrent_port: int = 6881
    torrent_address: str | None = None
    torrent_seed_seconds: float = 600.0
    torrent_s3_readers: int = 8
    torrent_web_seed_delay: float = 30.0
    torrent_stall_seconds: float = 60.0
    tracker_url: str | None = None
    # Fleet status and metrics (docs/status.md).
    node_name: str = field(default_factory=socket.gethostname)
    groups: tuple[str, ...] = ()
    # Globs over artifact names this daemon installs (Names); None: every name.
    names: tuple[str, ...] | None = None
    status_interval: float = 300.0
    metrics_address: tuple[str, int] | None = None
    metrics_textfile: Path | None = None
    # [[Release]] tables (distsync.release).
    releases: tuple[ReleaseSpec, ...] = ()
    swift: SwiftCreds | None = None  # Storage = "Swift" or "Swift+BitTorrent"
    # Signed uploads (distsync.signed): the uploader's private key, and the public keys whose
    # signatures this config accepts.
    signing_key: SigningKey | None = field(default=None, repr=False)
    trusted_signers: tuple[bytes, ...] = ()
    # [Plugin.<name>] tables, each checked by its plugin (distsync.plugins).
    plugin_tables: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def storage_name(self) -> str:
        """The storage plugin: ``S3`` for ``Storage = "S3+BitTorrent"``."""
        return self.storage.partition("+")[0]

    @property
    def transfer_name(self) -> str | None:
        """The transfer plugin after the ``+`` (``BitTorrent``), or None: ranged GETs."""
        return self.storage.partition("+")[2] or None

    def plugin_table(self, name: str) -> Mapping[str, Any]:
        """The plugin's ``[Plugin.<name>]`` table, ``{}`` when the file has none."""
        return self.plugin_tables.get(name, {})

    @property
    def trust(self) -> Trust:
        """The signers whose uploads this config accepts: its TrustedSigners and its own key.

        An uploader's config trusts what it signs itself, so its ``list``, ``download`` and
        the idempotency check of ``upload`` see what the fleet sees: forged entries are not
        shown, and cannot make an upload be skipped.
        """
        own = () if self.signing_key is None else (self.signing_key.public_key,)
        return Trust.of((*self.trusted_signers, *own))

    def unsigned_warning(self) -> str | None:
        """What to tell the user of a config that accepts unsigned uploads (None: it does not)."""
        if self.trust.required:
            return None
        return (
            f"{self.path} has no TrustedSigners: unsigned uploads are accepted, so whoever "
            "holds this SharedSecret (any server's config included) can publish to the fleet; "
            "turn signing on with `distsync keys new`: SigningKey in the uploader's config, "
            "its public key in TrustedSigners of every config (docs/operations.md#signed-uploads)"
        )

    def require_signing_key(self) -> SigningKey | None:
        """The key to sign uploads with; ConfigError when this config trusts only signed
        uploads but cannot sign (a daemon's config): the fleet would reject what it wrote."""
        if self.signing_key is None and self.trust.required:
            raise self.error(
                "SigningKey",
                "is missing: this config trusts only signed uploads (TrustedSigners) and cannot "
                "sign, so the fleet would reject its uploads (a server's config cannot publish; "
                "upload with the uploader's config)",
            )
        return self.signing_key

    def refuse_signing_key(self) -> None:
        """A daemon's config must not hold a private key (``distsync daemon`` refuses it)."""
        if self.signing_key is not None:
            raise self.error(
                "SigningKey",
                "does not belong in a server's config: whoever reads this file could publish "
                "to the whole fleet; remove it (a daemon needs only TrustedSigners, the public "
                "keys)",
            )

    def error(self, key: str | None, problem: str) -> ConfigError:
        return ConfigError(self.path, key, problem)

    def require_output_dir(self) -> Path:
        if self.output_dir is None:
            raise self.error("OutputDir", "is required here (the directory artifacts go to)")
        return self.output_dir

    def daemon_state_dir(self) -> Path:
        """Where the daemon keeps what it installed; ``StateDir`` or a default per user."""
        if self.state_dir is not None:
            return self.state_dir
        base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
        return Path(base) / "distsync"

    def local_store_root(self) -> Path:
        """For ``Storage = "Local"``: the directory that plays the bucket."""
        return self._resolve(self.storage_bucket)

    def _resolve(self, value: str) -> Path:
        path = Path(os.path.expanduser(value))
        return path if path.is_absolute() else (self.path.parent / path)


# Commands that act on a server, so they read the daemon's configuration by default.
SERVER_COMMANDS = ("daemon", "releases", "rollback", "resume")


def default_config_path(command: str) -> Path:
    default = DEFAULT_DAEMON_CONFIG if command in SERVER_COMMANDS else DEFAULT_UPLOAD_CONFIG
    return Path(os.path.expanduser(default))


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read, parse and validate one configuration file."""
    cfg_path = Path(path)
    try:
        data = cfg_path.read_bytes()
        mode = cfg_path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(
            cfg_path, None, "no such file (create one with `distsync setup`, or pass -c PATH)"
        ) from None
    except IsADirectoryError:
        raise ConfigError(cfg_path, None, "is a directory, not a configuration file") from None
    except OSError as exc:
        raise ConfigError(cfg_path, None, f"cannot be read: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "%s is readable by group or others (mode %o) and holds a secret: chmod 600 it",
            cfg_path,
            stat.S_IMODE(mode),
        )
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(cfg_path, None, "is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(cfg_path, None, f"is not valid TOML: {exc}") from None
    return _build(cfg_path, raw)


def _build(path: Path, raw: dict[str, Any]) -> Config:
    def fail(key: str | None, problem: str) -> ConfigError:
        return ConfigError(path, key, problem)

    _check_keys(path, "", raw, KEYS)
    if "Aws" in raw and "AwsCreds" in raw:
        raise fail("Aws", "give either [AwsCreds] or the Go version's [Aws], not both")
    aws_table_name = "Aws" if "Aws" in raw else "AwsCreds"
    aws_raw = raw.get(aws_table_name, {})
    _check_keys(path, aws_table_name + ".", aws_raw, AWS_KEYS)

    if "PeerDist" in raw:
        log.warning("%s: PeerDist (the Go version's peer settings) is ignored", path)
    if "SharedSecret" not in raw:
        raise fail("SharedSecret", "is missing (every configuration needs the shared secret)")
    try:
        secret = parse_secret(raw["SharedSecret"])
    except InvalidSecret as exc:
        raise fail("SharedSecret", str(exc)) from None
    bucket = raw.get("StorageBucket", "").strip()
    if not bucket:
        raise fail("StorageBucket", "is missing or empty")

    values: dict[str, Any] = {
        "path": path,
        "secret": secret,
        "storage_bucket": bucket,
        "encrypt": _choice(path, raw, "Encrypt", ENCRYPT_CHOICES, ENCRYPT_CHOICES[0]),
        "notify": _plugin_choice(path, "Notify", "notify", raw.get("Notify", "S3Poll")),
        "storage": _storage(path, raw.get("Storage", "S3")),
        "aws": AwsCreds(
            region=aws_raw.get("Region", "us-east-1") or "us-east-1",
            access_key=aws_raw.get("AccessKey") or None,
            secret_key=aws_raw.get("SecretKey") or None,
            session_token=aws_raw.get("SessionToken") or None,
            endpoint=aws_raw.get("Endpoint") or None,
        ),
    }
    cfg = Config(**values)
    for key, attr in (("OutputDir", "output_dir"), ("StateDir", "state_dir")):
        if raw.get(key):
            values[attr] = cfg._resolve(raw[key])
    if "Prefix" in raw:
        prefix = raw["Prefix"].strip("/")
        if not prefix or any(part in ("", ".", "..") for part in prefix.split("/")):
            raise fail("Prefix", "must be a non-empty key prefix like 'distsync/v3'")
        values["prefix"] = prefix + "/"
    values["poll_interval"] = _number(path, raw, "PollInterval", 15.0, low=0.1, high=86400)
    values["poll_jitter"] = _number(path, raw, "PollJitter", 5.0, low=0.0, high=86400)
    values["hook_timeout"] = _number(path, raw, "HookTimeout", 300.0, low=1, high=86400)
    if "ChunkSize" in raw:
        size = raw["ChunkSize"]
        if size % 16 or not (1 << 14) <= size <= (1 << 26):
            raise fail("ChunkSize", "must be a multiple of 16 between 16384 and 67108864")
        values["chunk_size"] = size
    if "OnUpdate" in raw:
        values["on_update"] = _command(path, raw["OnUpdate"])
    if raw.get("Uploader"):
        uploader = raw["Uploader"]
        if len(uploader.encode()) > 255 or any(
            ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in uploader
        ):
            raise fail("Uploader", "must be at most 255 bytes, with no control characters")
        values["uploader"] = uploader
    if "Pin" in raw:
        pins: dict[str, str] = {}
        for name, version in raw["Pin"].items():
            position = parse_version_id(version) if isinstance(version, str) else None
            if position is None:
                raise fail(
                    f"Pin.{name}",
                    'must be a version id from `distsync list`, e.g. "42" or "42.9f3ac2e07b5d"',
                )
            pins[name] = version_id(position)  # canonical: "042" pins "42"
        values["pins"] = pins
    if "ModeMask" in raw:
        if not 0 <= raw["ModeMask"] <= 0o7777:
            raise fail("ModeMask", "must be a file mode mask from 0 to 0o7777, e.g. 0o777")
        values["mode_mask"] = raw["ModeMask"]
    values.update(_torrent(path, raw))
    values.update(_fleet(cfg, raw))
    if "Release" in raw:
        values["releases"] = parse_releases(path, raw["Release"])
    values["swift"] = _swift(path, raw)
    values.update(_signing(path, raw))
    values["plugin_tables"] = _plugin_tables(path, raw.get("Plugin", {}))
    cfg = Config(**values)
    _check_plugins(cfg)
    return cfg


def _signing(path: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """``SigningKey`` and ``TrustedSigners`` (``ed25519:<base64url>``, crypto/signing.py)."""
    values: dict[str, Any] = {}
    if "SigningKey" in raw:
        try:
            values["signing_key"] = SigningKey.parse(raw["SigningKey"].strip())
        except InvalidKey as exc:
            raise ConfigError(path, "SigningKey", str(exc)) from None
    signers: list[bytes] = []
    for index, text in enumerate(raw.get("TrustedSigners", [])):
        key = f"TrustedSigners[{index}]"
        if not isinstance(text, str):
            raise ConfigError(path, key, 'must be a string like "ed25519:..."')
        try:
            public = parse_key(text.strip())
        except InvalidKey as exc:
            raise ConfigError(path, key, str(exc)) from None
        own = values.get("signing_key")
        if own is not None and public == own.seed:
            raise ConfigError(
                path,
                key,
                "is this config's private SigningKey, not a public key: it must not be copied "
                "anywhere (`distsync keys show` prints the public key)",
            )
        if public not in signers:
            signers.append(public)
    values["trusted_signers"] = tuple(signers)
    return values


def _storage(path: Path, value: str) -> str:
    """``Storage``: a storage plugin, optionally ``+`` a transfer plugin (``S3+BitTorrent``),
    in the plugins' own spelling."""
    storage, plus, transfer = value.partition("+")
    found = _plugin_choice(path, "Storage", "storage", storage, whole=value)
    if plus:
        found += "+" + _plugin_choice(path, "Storage", "transfer", transfer, whole=value)
    return found


def _plugin_choice(path: Path, key: str, kind: str, value: str, *, whole: str = "") -> str:
    try:
        return plugins.find(kind, value.strip()).name
    except plugins.PluginUnavailable:
        choices = ", ".join(plugins.names(kind)) or "none is installed"
        if kind == "storage":
            transfers = ", ".join(plugins.names("transfer"))
            choices += f"; a transfer is added as STORAGE+TRANSFER: {transfers}"
        raise ConfigError(
            path, key, f"unknown value {whole or value!r} (expected one of: {choices})"
        ) from None


def _plugin_tables(path: Path, tables: dict[str, Any]) -> dict[str, Mapping[str, Any]]:
    """``[Plugin.<name>]``: a table per installed plugin, by the plugin's own name."""
    found: dict[str, Mapping[str, Any]] = {}
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(path, f"Plugin.{name}", "must be a table ([Plugin.NAME])")
        for kind in plugins.GROUPS:
            with contextlib.suppress(plugins.PluginUnavailable):
                found[plugins.find(kind, name).name] = table
                break
        else:
            raise ConfigError(path, f"Plugin.{name}", "no plugin of that name is installed")
    return found


def _check_plugins(cfg: Config) -> None:
    """Load the plugins the configuration names; each checks its own table (and anything
    else of ``cfg`` it needs). A transfer or notification method needing a capability the
    storage lacks is a configuration error, not a failure at the first upload."""
    storage = _load_plugin(cfg, "Storage", "storage", cfg.storage_name)
    used = [(cfg.storage_name, storage)]
    needers = [("Notify", "notify", cfg.notify)]
    if cfg.transfer_name is not None:
        needers.append(("Storage", "transfer", cfg.transfer_name))
    for key, kind, name in needers:
        plugin = _load_plugin(cfg, key, kind, name)
        used.append((name, plugin))
        missing = [need for need in sorted(plugin.needs) if not storage.capabilities.has(need)]
        if missing:
            raise cfg.error(
                key,
                f"{name} needs a storage that can do {', '.join(missing)}; "
                f"{cfg.storage_name} cannot",
            )
    checked = set()
    for name, plugin in used:
        if plugin is not None and name not in checked:
            checked.add(name)
            plugin.check_config(cfg, cfg.plugin_table(name))
    for name, table in cfg.plugin_tables.items():
        if name not in checked:  # installed but not used here: still the plugin's to check
            kind = next(k for k in plugins.GROUPS if name in plugins.names(k))
            _load_plugin(cfg, f"Plugin.{name}", kind, name).check_config(cfg, table)


def _load_plugin(cfg: Config, key: str, kind: str, name: str) -> Any:
    try:
        return plugins.find(kind, name).load()
    except plugins.PluginUnavailable as exc:
        raise cfg.error(key, str(exc)) from None


def _swift(path: Path, raw: dict[str, Any]) -> SwiftCreds | None:
    """``[SwiftCreds]``: one auth system or the other (Storage = "Swift" requires it)."""
    table = raw.get("SwiftCreds")
    if table is None:
        return None
    _check_keys(path, "SwiftCreds.", table, SWIFT_KEYS)

    def need(key: str, why: str) -> str:
        value = table.get(key, "").strip()
        if not value:
            raise ConfigError(path, f"SwiftCreds.{key}", f"is missing or empty ({why})")
        return str(value)

    auth_url = need("AuthURL", "the Swift or Keystone login URL")
    if urlsplit(auth_url).scheme not in ("http", "https") or not urlsplit(auth_url).hostname:
        raise ConfigError(path, "SwiftCreds.AuthURL", "must be an http:// or https:// URL")
    username = need("Username", "the identity to log in as")
    if "APIKey" in table and "Password" in table:
        raise ConfigError(
            path,
            "SwiftCreds.APIKey",
            "give APIKey (tempauth, Rackspace v1) or Password (Keystone v3), not both",
        )
    keystone_only = ("ProjectName", "UserDomainName", "ProjectDomainName", "Region")
    if "Password" in table:
        return SwiftCreds(
            auth_url=auth_url,
            username=username,
            password=need("Password", "Keystone v3"),
            project_name=need("ProjectName", "Keystone v3 scopes the login to a project"),
            user_domain_name=table.get("UserDomainName") or "Default",
            project_domain_name=table.get("ProjectDomainName") or "Default",
            region=table.get("Region") or None,
        )
    for key in keystone_only:
        if key in table:
            raise ConfigError(
                path, f"SwiftCreds.{key}", "goes with Password (Keystone v3), not with APIKey"
            )
    return SwiftCreds(
        auth_url=auth_url,
        username=username,
        api_key=need("APIKey", "tempauth and Rackspace v1; Keystone v3 uses Password"),
    )


def _torrent(path: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """The Torrent* keys; they only matter with Storage = "S3+BitTorrent"."""
    values: dict[str, Any] = {
        "torrent_seed_seconds": _number(path, raw, "TorrentSeedSeconds", 600.0, low=0, high=86400),
        "torrent_web_seed_delay": _number(path, raw, "TorrentWebSeedDelay", 30.0, low=0, high=3600),
        "torrent_stall_seconds": _number(path, raw, "TorrentStallSeconds", 60.0, low=1, high=3600),
    }
    for key, attr, high in (
        ("TorrentPort", "torrent_port", 65535),
        ("TorrentS3Readers", "torrent_s3_readers", 64),
    ):
        if key in raw:
            if not 0 <= raw[key] <= high:
                raise ConfigError(path, key, f"must be an integer from 0 to {high}")
            values[attr] = raw[key]
    if raw.get("TorrentAddress"):
        values["torrent_address"] = raw["TorrentAddress"]
    if raw.get("TrackerURL"):
        if urlsplit(raw["TrackerURL"]).scheme not in ("http", "https", "udp"):
            raise ConfigError(path, "TrackerURL", "must be an http://, https:// or udp:// URL")
        values["tracker_url"] = raw["TrackerURL"]
    return values


def _fleet(cfg: Config, raw: dict[str, Any]) -> dict[str, Any]:
    """NodeName, Groups, StatusInterval and the Metrics* keys (the daemon's)."""
    path = cfg.path
    values: dict[str, Any] = {
        "status_interval": _number(path, raw, "StatusInterval", 300.0, low=1, high=86400),
    }
    if "NodeName" in raw:
        name = raw["NodeName"].strip()
        if not name or len(name) > 255 or any(ord(ch) < 32 for ch in name):
            raise ConfigError(path, "NodeName", "must be 1-255 printable characters")
        values["node_name"] = name
    if "Groups" in raw:
        groups = raw["Groups"]
        if not all(isinstance(g, str) and g.strip() and len(g) <= 255 for g in groups):
            raise ConfigError(path, "Groups", 'must be a list of names, e.g. ["web", "eu"]')
        values["groups"] = tuple(dict.fromkeys(g.strip() for g in groups))
    if "Names" in raw:
        globs = raw["Names"]
        if not all(isinstance(g, str) and g and len(g) <= 255 for g in globs):
            raise ConfigError(path, "Names", 'must be a list of globs, e.g. ["myapp-*.tar.gz"]')
        values["names"] = tuple(globs)
    if raw.get("MetricsAddress"):
        host, sep, port = raw["MetricsAddress"].rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535:
            raise ConfigError(path, "MetricsAddress", 'must be HOST:PORT, e.g. "127.0.0.1:9717"')
        # [::1]:9717 for IPv6; an empty host is loopback, never every interface by accident.
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        values["metrics_address"] = (host or "127.0.0.1", int(port))
    if raw.get("MetricsTextfile"):
        textfile = cfg._resolve(raw["MetricsTextfile"])
        if not textfile.name.endswith(".prom"):
            raise ConfigError(
                path, "MetricsTextfile", "must end in .prom (node_exporter reads only those)"
            )
        values["metrics_textfile"] = textfile
    return values


def _check_keys(
    path: Path, scope: str, table: dict[str, Any], known: dict[str, tuple[type, ...]]
) -> None:
    for key, value in table.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(path, scope + key, "unknown key" + hint)
        types = known[key]
        # bool is an int in Python but never what a numeric key means.
        if isinstance(value, bool) or not isinstance(value, types):
            wanted = " or ".join(_TYPE_NAMES[t] for t in types)
            raise ConfigError(path, scope + key, f"must be {wanted}")


def _choice(
    path: Path, raw: dict[str, Any], key: str, choices: tuple[str, ...], default: str
) -> str:
    value = raw.get(key, default)
    for choice in choices:
        if value.lower() == choice.lower():
            return choice
    raise ConfigError(path, key, f"unknown value {value!r} (expected one of: {', '.join(choices)})")


def _number(
    path: Path, raw: dict[str, Any], key: str, default: float, *, low: float, high: float
) -> float:
    value = float(raw.get(key, default))
    if not low <= value <= high:
        raise ConfigError(path, key, f"must be between {low:g} and {high:g} seconds")
    return value


def _command(path: Path, value: str | list[Any]) -> tuple[str, ...]:
    import shlex

    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise ConfigError(path, "OnUpdate", f"cannot be split into a command: {exc}") from None
    else:
        if not all(isinstance(item, str) for item in value):
            raise ConfigError(path, "OnUpdate", "must be a list of strings")
        argv = list(value)
    if not argv:
        raise ConfigError(path, "OnUpdate", "is empty")
    return tuple(argv)
