"""The public notification plugin interface, version 1 (docs/plugins.md).

A ``distsync.notify`` entry point names an object with these attributes. Version 1 knows one
way of noticing, the daemon's poll of the log's marker; a method declares the store
capabilities it relies on and the engine refuses a configuration whose storage lacks them.
Push methods (a queue per server) will extend the interface in a version 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from distsync.config import Config

__all__ = ["NOTIFY_API", "NotifyMethod"]

NOTIFY_API = 1


class NotifyMethod(Protocol):
    api: int  # NOTIFY_API
    needs: frozenset[str]  # storage capabilities (distsync.storage.api.Capabilities) it needs

    def check_config(self, cfg: Config, table: Mapping[str, Any]) -> None:
        """Validate ``[Plugin.<name>]``; raise ``cfg.error(key, problem)``."""
