"""``Notify = "S3Poll"``: the daemon polls the log's marker with one conditional request
(``Store.changed``) every ``PollInterval`` (+ jitter) seconds; the poll lives in the daemon."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from distsync.notify.api import NOTIFY_API
from distsync.plugin_config import no_settings

if TYPE_CHECKING:
    from distsync.config import Config

__all__ = ["S3POLL"]


class _S3Poll:
    api = NOTIFY_API
    # Without a cheap conditional check every poll would read the marker whole.
    needs = frozenset({"conditional_head"})

    def check_config(self, cfg: Config, table: Mapping[str, Any]) -> None:
        no_settings(cfg, "S3Poll", table)


S3POLL = _S3Poll()
