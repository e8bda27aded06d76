"""``[[Release]]`` tables: which artifact names become releases, where, and their hooks.

Each problem is one ConfigError naming the file, the table (counted from 1, in file order)
and the key, e.g. ``/etc/distsyncd.toml: Release[2].Keep: must be an integer from 1 to 1000``.
"""

from __future__ import annotations

import fnmatch
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distsync.errors import ConfigError

__all__ = ["RELEASE_KEYS", "ReleaseSpec", "parse_releases"]

# Keys of one [[Release]] table and their TOML types.
RELEASE_KEYS: dict[str, tuple[type, ...]] = {
    "Match": (str,),
    "Dir": (str,),
    "Keep": (int,),
    "Unpack": (bool,),
    "PreActivate": (str, list),
    "HealthCheck": (str, list),
    "HealthTimeout": (int, float),
    "PostActivate": (str, list),
}
_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    list: "a list",
    bool: "true or false",
}


@dataclass(frozen=True)
class ReleaseSpec:
    """One ``[[Release]]``: artifact names matching ``match`` are released into ``dir``."""

    match: str
    dir: Path
    keep: int = 5
    unpack: bool = True
    pre_activate: tuple[str, ...] = ()
    health_check: tuple[str, ...] = ()
    health_timeout: float = 60.0
    post_activate: tuple[str, ...] = ()

    def claims(self, name: str) -> bool:
        # fnmatchcase: the same answer on every operating system.
        return fnmatch.fnmatchcase(name, self.match)

    @property
    def label(self) -> str:
        """How logs and commands name this release: its Match pattern."""
        return self.match


def parse_releases(path: Path, raw: list[Any]) -> tuple[ReleaseSpec, ...]:
    specs: list[ReleaseSpec] = []
    for number, table in enumerate(raw, start=1):
        where = f"Release[{number}]"
        if not isinstance(table, dict):
            raise ConfigError(path, where, "must be a table ([[Release]])")
        specs.append(_one(path, where, table))
    seen: dict[Path, str] = {}
    for number, spec in enumerate(specs, start=1):
        for other_dir, other in seen.items():
            nested = other_dir in spec.dir.parents or spec.dir in other_dir.parents
            if spec.dir == other_dir or nested:
                raise ConfigError(
                    path, f"Release[{number}].Dir", f"overlaps the Dir of {other} ({other_dir})"
                )
        seen[spec.dir] = f"Release[{number}]"
    return tuple(specs)


def _one(path: Path, where: str, table: dict[str, Any]) -> ReleaseSpec:
    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(path, f"{where}.{key}", problem)

    for key, value in table.items():
        if key not in RELEASE_KEYS:
            raise fail(key, f"unknown key (expected one of: {', '.join(RELEASE_KEYS)})")
        types = RELEASE_KEYS[key]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise fail(key, "must be " + " or ".join(_TYPE_NAMES[t] for t in types))
    for key in ("Match", "Dir"):
        if not str(table.get(key, "")).strip():
            raise fail(key, "is required")
    match = table["Match"]
    if "/" in match or match.startswith("."):
        raise fail("Match", "is a pattern over artifact names (no '/', no leading '.')")
    directory = Path(os.path.expanduser(table["Dir"]))
    if not directory.is_absolute():
        directory = path.parent / directory
    directory = Path(os.path.normpath(directory))
    if directory == Path(directory.anchor):
        raise fail("Dir", "must not be the root directory")
    keep = table.get("Keep", 5)
    if not 1 <= keep <= 1000:
        raise fail("Keep", "must be an integer from 1 to 1000")
    timeout = float(table.get("HealthTimeout", 60.0))
    if not 1 <= timeout <= 86400:
        raise fail("HealthTimeout", "must be between 1 and 86400 seconds")
    return ReleaseSpec(
        match=match,
        dir=directory,
        keep=keep,
        unpack=table.get("Unpack", True),
        pre_activate=_argv(fail, "PreActivate", table.get("PreActivate")),
        health_check=_argv(fail, "HealthCheck", table.get("HealthCheck")),
        health_timeout=timeout,
        post_activate=_argv(fail, "PostActivate", table.get("PostActivate")),
    )


def _argv(fail: Any, key: str, value: str | list[Any] | None) -> tuple[str, ...]:
    """A command without a shell: a list of strings, or a string split like a shell would."""
    if value is None:
        return ()
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise fail(key, f"cannot be split into a command: {exc}") from None
    else:
        if not all(isinstance(item, str) for item in value):
            raise fail(key, "must be a list of strings")
        argv = list(value)
    if not argv:
        raise fail(key, "is empty")
    return tuple(argv)
