"""BitTorrent v1 metadata over an artifact's *ciphertext*, computed while it streams out.

Pure and free of libtorrent, so an uploader needs nothing beyond the engine: ``TorrentWriter``
wraps the store's object writer and hashes every byte on its way to the store (no second
pass), and ``TorrentMeta`` is the private single-file torrent that goes into the encrypted
manifest. The torrent's name is the object key's random leaf, never the artifact's name.

In the manifest (``Manifest.torrent``)::

    {"v": 1, "info": base64(bencoded info dict), "info_hash": hex SHA-1 of those bytes}

The manifest is authenticated, so its piece hashes are trusted: a peer that serves a piece
whose SHA-1 differs is caught by libtorrent before anything is written as complete.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

from distsync.errors import FormatError
from distsync.storage.base import ObjectWriter

__all__ = [
    "MAX_PIECE",
    "MIN_PIECE",
    "PieceHasher",
    "TorrentMeta",
    "TorrentWriter",
    "bdecode",
    "bencode",
    "piece_length_for",
]

MIN_PIECE = 128 << 10  # small pieces spread faster: 256 KiB measured 5-10 % slower
MAX_PIECE = 16 << 20
_TARGET_PIECES = 1500  # ~30 KB of hashes in the manifest
_HASH_LEN = 20
_MANIFEST_VERSION = 1

Bencodable = Union[int, bytes, str, Sequence[Any], Mapping[Any, Any]]


def piece_length_for(size: int) -> int:
    """A power of two between 128 KiB and 16 MiB giving about 1500 pieces or fewer."""
    length = MIN_PIECE
    while length < MAX_PIECE and length * _TARGET_PIECES < size:
        length *= 2
    return length


# -- bencode (BEP 3) ---------------------------------------------------------------------------


def bencode(value: Bencodable) -> bytes:
    """Canonical bencoding: dictionary keys sorted as raw bytes, so the info-hash is stable."""
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Any, out: list[bytes]) -> None:
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, (bytes, str)):
        raw = value.encode("utf-8") if isinstance(value, str) else value
        out.append(b"%d:%s" % (len(raw), raw))
    elif isinstance(value, Mapping):
        items = sorted(
            ((k.encode("utf-8") if isinstance(k, str) else k), v) for k, v in value.items()
        )
        out.append(b"d")
        for key, item in items:
            _encode(key, out)
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, Sequence):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Any:
    """Strict decoder (dict keys as bytes); FormatError on anything malformed or trailing."""
    try:
        value, end = _decode(data, 0)
    except (IndexError, ValueError, RecursionError):  # RecursionError: lists nested deep
        raise FormatError("torrent metadata is not valid bencoding") from None
    if end != len(data):
        raise FormatError("torrent metadata has trailing bytes")
    return value


def _decode(data: bytes, pos: int) -> tuple[Any, int]:
    lead = data[pos : pos + 1]
    if lead == b"i":
        end = data.index(b"e", pos)
        text = data[pos + 1 : end]
        if not text or text.startswith(b"-0") or (text.startswith(b"0") and text != b"0"):
            raise ValueError("non-canonical integer")
        return int(text), end + 1
    if lead in (b"l", b"d"):
        items: list[Any] = []
        pos += 1
        while data[pos : pos + 1] != b"e":
            item, pos = _decode(data, pos)
            items.append(item)
        if lead == b"l":
            return items, pos + 1
        keys = items[0::2]
        if len(items) % 2 or not all(isinstance(k, bytes) for k in keys) or keys != sorted(keys):
            raise ValueError("bad dictionary")
        return dict(zip(keys, items[1::2])), pos + 1
    if lead.isdigit():
        colon = data.index(b":", pos)
        length = int(data[pos:colon])
        end = colon + 1 + length
        if end > len(data):
            raise ValueError("string runs past the end")
        return data[colon + 1 : end], end
    raise ValueError("unexpected byte")


# -- hashing while streaming -----------------------------------------------------------------


class PieceHasher:
    """SHA-1 of each ``piece_length`` stretch of a byte stream fed in arbitrary slices."""

    def __init__(self, piece_length: int) -> None:
        if piece_length < 16 << 10 or piece_length & (piece_length - 1):
            raise ValueError("piece length must be a power of two of at least 16 KiB")
        self.piece_length = piece_length
        self.total = 0
        self._digests: list[bytes] = []
        self._current = hashlib.sha1()  # BEP 3 fixes SHA-1 for v1 pieces
        self._filled = 0

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data).cast("B")
        self.total += len(view)
        while len(view):
            n = min(self.piece_length - self._filled, len(view))
            self._current.update(view[:n])
            self._filled += n
            view = view[n:]
            if self._filled == self.piece_length:
                self._digests.append(self._current.digest())
                self._current = hashlib.sha1()
                self._filled = 0

    def pieces(self) -> bytes:
        """All piece hashes so far, the last (short) piece included."""
        tail = [self._current.digest()] if self._filled else []
        return b"".join(self._digests + tail)


@dataclass(frozen=True)
class TorrentMeta:
    """A private, single-file v1 torrent: ``info`` is the exact bencoded info dictionary."""

    info: bytes
    name: str
    length: int
    piece_length: int
    pieces: bytes

    @classmethod
    def build(cls, name: str, length: int, piece_length: int, pieces: bytes) -> TorrentMeta:
        info = bencode(
            {
                "length": length,
                "name": name,
                "piece length": piece_length,
                "pieces": pieces,
                "private": 1,  # BEP 27: no DHT, no PEX: peers only from our records/tracker
            }
        )
        return cls(info, name, length, piece_length, pieces)

    @property
    def info_hash(self) -> str:
        return hashlib.sha1(self.info).hexdigest()

    @property
    def piece_count(self) -> int:
        return len(self.pieces) // _HASH_LEN

    def to_manifest(self) -> dict[str, Any]:
        return {
            "v": _MANIFEST_VERSION,
            "info": base64.b64encode(self.info).decode("ascii"),
            "info_hash": self.info_hash,
        }

    @classmethod
    def from_manifest(cls, raw: Mapping[str, Any], object_size: int) -> TorrentMeta:
        """Parse and check a manifest's torrent entry against the object it describes."""
        if raw.get("v") != _MANIFEST_VERSION:
            raise FormatError(f"unsupported torrent metadata version {raw.get('v')!r}")
        try:
            info = base64.b64decode(str(raw.get("info", "")), validate=True)
        except (binascii.Error, ValueError):
            raise FormatError("torrent metadata is not base64") from None
        decoded = bdecode(info)
        if not isinstance(decoded, dict) or set(decoded) != {
            b"length",
            b"name",
            b"piece length",
            b"pieces",
            b"private",
        }:
            raise FormatError("torrent info is not a private single-file torrent")
        length, name = decoded[b"length"], decoded[b"name"]
        piece_length, pieces = decoded[b"piece length"], decoded[b"pieces"]
        if not (
            isinstance(length, int)
            and isinstance(piece_length, int)
            and isinstance(name, bytes)
            and isinstance(pieces, bytes)
            and decoded[b"private"] == 1
        ):
            raise FormatError("torrent info has fields of the wrong type")
        if (
            length != object_size
            or not (name.isascii() and name.isalnum())
            or piece_length < 16 << 10
            or piece_length & (piece_length - 1)
            or len(pieces) != -(-length // piece_length) * _HASH_LEN
        ):
            raise FormatError("torrent info does not describe this object")
        meta = cls(info, name.decode("ascii"), length, piece_length, pieces)
        if raw.get("info_hash") != meta.info_hash:
            raise FormatError("torrent info-hash does not match its info dictionary")
        return meta

    def torrent_file(self, trackers: Sequence[str] = ()) -> bytes:
        """A complete .torrent: the info bytes are embedded as they are, keeping the hash."""
        head = b"d"
        if trackers:
            head += bencode("announce") + bencode(trackers[0])
        return head + bencode("info") + self.info + b"e"


class TorrentWriter:
    """An ``ObjectWriter`` that hashes pieces of everything it passes on to ``inner``."""

    def __init__(self, inner: ObjectWriter, name: str, piece_length: int) -> None:
        self._inner = inner
        self._name = name
        self._hasher = PieceHasher(piece_length)

    def write(self, data: bytes | memoryview) -> int:
        n = self._inner.write(data)
        # A raw writer may take less than offered; the caller then writes the rest again.
        self._hasher.update(memoryview(data)[:n] if n is not None else data)
        return n

    def commit(self) -> None:
        self._inner.commit()

    def abort(self) -> None:
        self._inner.abort()

    def meta(self) -> TorrentMeta:
        """The torrent of everything written (call after ``commit``)."""
        hasher = self._hasher
        return TorrentMeta.build(self._name, hasher.total, hasher.piece_length, hasher.pieces())
