"""The error families of distsync, each carrying the one line a user sees and an exit status.

Two families matter most, as in python-tuf: the *data lied* (IntegrityError: tampered,
truncated, replayed or wrongly keyed objects) and the *transport failed* (StorageError).
Everything a user can trigger is raised as one of these; the CLI prints ``str(err)`` and exits
with ``err.exit_code``. Messages never include secret material.
"""

from __future__ import annotations

__all__ = [
    "AccessDeniedError",
    "ConfigError",
    "ContentGoneError",
    "DistsyncError",
    "FleetError",
    "FormatError",
    "IntegrityError",
    "LocalIOError",
    "NotAnObjectError",
    "NotFoundError",
    "ObjectTooLargeError",
    "StorageError",
    "SwarmError",
    "UnknownArtifactError",
    "UsageError",
]


class DistsyncError(Exception):
    """Base class: a failure with a one-line, user-facing message."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(DistsyncError):
    """The command line itself is wrong."""

    exit_code = 2


class UnknownArtifactError(UsageError):
    """The artifact name or version a user asked for is not in the store (a usage error: the
    store answered; what was asked for does not exist)."""


class ConfigError(DistsyncError):
    """A configuration file is missing, unreadable or invalid.

    The message names the file, the key and what is wrong.
    """

    exit_code = 2

    def __init__(self, path: object, key: str | None, problem: str) -> None:
        where = f"{path}: {key}: " if key else f"{path}: "
        super().__init__(where + problem)
        self.path = path
        self.key = key
        self.problem = problem


class IntegrityError(DistsyncError):
    """Stored data failed verification: tampered, truncated, reordered, replayed or wrong key."""

    exit_code = 3


class FormatError(IntegrityError):
    """Stored data is not in a format distsync understands (bad magic, version, framing)."""


class ObjectTooLargeError(FormatError):
    """A small object (log entry, marker, record) is larger than any genuine one can be.

    Refused before its contents are read. A FormatError, so every reader that already treats
    untrusted data as "reject this entry and move on" does so for it too.
    """


class NotAnObjectError(FormatError):
    """What stands at a key of a directory store is not a regular file (a directory, a FIFO, a
    symbolic link, a device): it cannot be an object distsync wrote, and is not opened."""


class StorageError(DistsyncError):
    """The store (S3, a directory) could not be reached or refused an operation."""

    exit_code = 4


class NotFoundError(StorageError):
    """An object, artifact name or version does not exist in the store."""


class ContentGoneError(NotFoundError):
    """A version's log entry is there but its content is not: it was pruned (retention.py)."""

    def __init__(self, name: str, version_id: str) -> None:
        super().__init__(
            f"version {version_id} of {name} was pruned from the store (its content is gone)"
        )
        self.name = name
        self.version_id = version_id


class SwarmError(StorageError):
    """The BitTorrent swarm could not deliver (libtorrent failed, or no progress): the daemon
    fetches the artifact by ranged GETs instead, so a user sees it only in the log."""


class AccessDeniedError(StorageError):
    """The store refused an operation to this identity (its policy does not allow it)."""


class LocalIOError(DistsyncError):
    """A local file could not be read or written (permissions, disk full, missing directory)."""

    exit_code = 5


class FleetError(DistsyncError):
    """The fleet did not do what was waited for: servers missing, or reporting a failure
    (``upload --wait``). The message names the servers and why."""

    exit_code = 6
