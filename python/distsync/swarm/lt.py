"""libtorrent itself: the optional import, the session settings, and its errors made ours.

libtorrent's Python bindings raise plain Python exceptions (RuntimeError for a boost
``system_error``, and others) from almost any call. None of them may end the daemon: each
becomes one ``SwarmError``, which makes the install fall back to ranged GETs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from distsync import __version__
from distsync.errors import DistsyncError, SwarmError
from distsync.swarm.settings import TorrentSettings

__all__ = ["import_libtorrent", "libtorrent_errors", "session_settings"]


def import_libtorrent() -> ModuleType | None:
    """libtorrent (the ``torrent`` extra), or None when it is not installed."""
    try:
        import libtorrent
    except ImportError:
        return None
    return libtorrent


@contextlib.contextmanager
def libtorrent_errors(what: str) -> Iterator[None]:
    """Turn whatever libtorrent raises while doing ``what`` into a SwarmError."""
    try:
        yield
    except DistsyncError:
        raise
    except Exception as exc:  # the bindings raise RuntimeError, ValueError, TypeError...
        raise SwarmError(f"libtorrent failed to {what}: {exc}") from exc


def session_settings(lt: ModuleType, settings: TorrentSettings) -> dict[str, Any]:
    """libtorrent settings for a closed fleet swarm (TESTING.md: measured on these machines)."""
    categories = lt.alert.category_t
    return {
        "listen_interfaces": f"0.0.0.0:{settings.port}",
        # Peers come only from our records and the tracker: nothing to broadcast or map.
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        # uTP was 4-6x slower than TCP here.
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        # Otherwise a presigned web seed on a private or loopback endpoint is silently dropped.
        "ssrf_mitigation": False,
        # Test fleets share one address; a real fleet never trips this.
        "allow_multiple_connections_per_ip": True,
        # One fleet, one goal: no tit-for-tat, every interested peer gets unchoked.
        "unchoke_slots_limit": -1,
        "urlseed_wait_retry": 5,
        "user_agent": f"distsync/{__version__}",
        "alert_mask": categories.error_notification
        | categories.status_notification
        | categories.peer_notification,
    }
