"""Helpers for plugins checking their ``[Plugin.<name>]`` table with one-line errors."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distsync.config import Config
    from distsync.errors import ConfigError

__all__ = ["check_table", "no_settings"]


def no_settings(cfg: Config, name: str, table: Mapping[str, Any]) -> None:
    """For a plugin that takes no settings of its own."""
    if table:
        raise cfg.error(f"Plugin.{name}", f"{name} takes no settings; remove the table")


def check_table(
    cfg: Config,
    name: str,
    table: Mapping[str, Any],
    known: Mapping[str, tuple[type, ...]],
    required: tuple[str, ...] = (),
) -> None:
    """Unknown keys (with a close match suggested), wrong types and missing keys of
    ``[Plugin.<name>]``, each one line naming the file and ``Plugin.<name>.<Key>``."""

    def error(key: str, problem: str) -> ConfigError:
        return cfg.error(f"Plugin.{name}.{key}", problem)

    for key, value in table.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            raise error(key, "unknown key" + (f" (did you mean {close[0]}?)" if close else ""))
        if (isinstance(value, bool) and bool not in known[key]) or not isinstance(
            value, known[key]
        ):
            wanted = " or ".join(t.__name__ for t in known[key])
            raise error(key, f"must be of type {wanted}")
    for key in required:
        if key not in table:
            raise error(key, "is missing")
