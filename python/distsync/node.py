"""Who this server is: a random node id kept in the state directory, and a display name.

The node id names the server's records in the bucket (``peers/<id>``, ``status/<id>``), so it
must survive restarts and reveal nothing: 128 random bits, made once. The display name
(``NodeName``, default the host name) only ever goes into the bucket encrypted.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from distsync.fsutil import atomic_output, local_io_error

__all__ = ["NODE_ID_FILE", "default_node_name", "is_node_id", "load_node_id", "node_id_of"]

NODE_ID_FILE = "node-id"
_NODE_ID_LEN = 32  # hex characters: 128 random bits
# Where daemons that ran the BitTorrent swarm before there was one id per daemon kept theirs.
_SWARM_NODE_ID = Path("torrent") / NODE_ID_FILE


def is_node_id(text: str) -> bool:
    return len(text) == _NODE_ID_LEN and all(c in "0123456789abcdef" for c in text)


def default_node_name() -> str:
    return socket.gethostname()


def load_node_id(path: Path) -> str:
    """The node id stored at ``path``, made once and kept, so a restart replaces its own
    records."""
    try:
        node = path.read_text().strip()
        if is_node_id(node):
            return node
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise local_io_error("read", path, exc) from None
    node = os.urandom(_NODE_ID_LEN // 2).hex()
    _store(path, node)
    return node


def node_id_of(state_dir: Path) -> str:
    """The daemon's node id in ``state_dir``. A server whose swarm already made one keeps it,
    so its peer and status records carry the same id."""
    path = state_dir / NODE_ID_FILE
    if not path.exists():
        try:
            legacy = (state_dir / _SWARM_NODE_ID).read_text().strip()
        except OSError:
            legacy = ""
        if is_node_id(legacy):
            _store(path, legacy)
    return load_node_id(path)


def _store(path: Path, node: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise local_io_error("create", path.parent, exc) from None
    with atomic_output(path, mode=0o600) as out:
        out.write(node.encode())
