"""What ``distsync setup`` is asked to do and what it reports back; no I/O here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DEFAULT_LOCAL_BUCKET",
    "DEFAULT_OUTPUT_DIR",
    "DestroyOptions",
    "Say",
    "SetupOptions",
    "SetupResult",
    "SwiftSetup",
    "silent",
]

DEFAULT_LOCAL_BUCKET = "~/.local/share/distsync/bucket"
DEFAULT_OUTPUT_DIR = "~/distsync"

# Where progress lines (``say``) and what a failure left behind (``warn``) go.
Say = Callable[[str], None]


def silent(line: str) -> None:
    pass


@dataclass
class SwiftSetup:
    """``--storage swift``: who setup logs in as (the uploader config keeps that identity) and
    the optional read-only identity for the daemons. Keystone v3 when ``project_name`` is
    given (``key`` is then a password), tempauth / Rackspace v1 otherwise (an API key)."""

    auth_url: str | None = None
    username: str | None = None
    key: str | None = field(default=None, repr=False)
    project_name: str | None = None
    user_domain_name: str | None = None
    project_domain_name: str | None = None
    region: str | None = None
    daemon_username: str | None = None
    daemon_key: str | None = field(default=None, repr=False)


@dataclass
class SetupOptions:
    storage: str | None = None  # "local", "s3", "s3+bittorrent", "swift", "swift+bittorrent"
    bucket: str | None = None  # S3: default distsync-<setup id>; Swift: the container
    region: str | None = None
    endpoint: str | None = None
    output_dir: str | None = None
    upload_config: str = "~/.distsync"
    daemon_config: str = "~/.distsyncd"
    force: bool = False
    # S3 only.
    setup_id: str | None = None  # default: a new random id
    prefix: str | None = None  # default distsync/v3/ (or what an earlier run chose)
    profile: str | None = None  # AWS profile for setup itself; default boto3's chain
    require_conditional_log: bool | None = None  # None: on for AWS, off for --endpoint
    no_iam: bool = False  # a store without IAM: both configs get setup's own keys
    record_expiry_days: int | None = None  # status/peer records of gone servers; None: 7
    swift: SwiftSetup = field(default_factory=SwiftSetup)  # --storage swift only


@dataclass
class DestroyOptions:
    setup_id: str
    region: str | None = None
    endpoint: str | None = None
    profile: str | None = None
    bucket: str | None = None
    delete_bucket: bool = False


@dataclass
class SetupResult:
    storage: str
    bucket: str
    upload_config: Path
    daemon_config: Path
    notes: list[str] = field(default_factory=list)
    setup_id: str | None = None
    changed: bool = True
    configs_written: bool = True
