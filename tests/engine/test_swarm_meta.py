"""The torrent over an artifact's ciphertext: hashed while streaming, canonical, strict."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import warnings
from pathlib import Path

import pytest
from distsync.crypto import stream
from distsync.errors import FormatError
from distsync.swarm.lt import import_libtorrent
from distsync.swarm.meta import (
    MIN_PIECE,
    TorrentMeta,
    TorrentWriter,
    bdecode,
    bencode,
    piece_length_for,
)

KiB = 1 << 10
MiB = 1 << 20
CHUNK = 64 * KiB


class _Sink:
    """An ObjectWriter that keeps what it gets and, like raw files, may take less."""

    def __init__(self, most: int | None = None) -> None:
        self.data = bytearray()
        self.most = most

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data)[: self.most] if self.most else memoryview(data)
        self.data += view
        return len(view)

    def commit(self) -> None:
        pass

    def abort(self) -> None:
        self.data.clear()


@pytest.mark.parametrize("most", [None, 1000])
def test_torrent_is_hashed_while_streaming_and_matches_libtorrent(
    tmp_path: Path, most: int | None
) -> None:
    plain = os.urandom(3 * MiB + 1234)
    sink = _Sink(most)
    writer = TorrentWriter(sink, "0a1b2c", MIN_PIECE)
    stream.encrypt_stream(os.urandom(32), io.BytesIO(plain), writer, chunk_size=CHUNK)  # type: ignore[arg-type]
    meta = writer.meta()
    assert meta.length == len(sink.data) == stream.ciphertext_size(len(plain), CHUNK)
    assert meta.pieces == b"".join(
        hashlib.sha1(sink.data[i : i + MIN_PIECE]).digest()
        for i in range(0, len(sink.data), MIN_PIECE)
    )
    lt = import_libtorrent()
    if lt is None:
        return
    # libtorrent's own torrent of the same bytes has the same info dictionary, byte for byte.
    (tmp_path / "0a1b2c").write_bytes(sink.data)
    files = lt.file_storage()
    files.add_file("0a1b2c", len(sink.data))
    with warnings.catch_warnings():  # the file_storage constructor is deprecated, not gone
        warnings.simplefilter("ignore", DeprecationWarning)
        made = lt.create_torrent(files, MIN_PIECE, flags=lt.create_torrent.v1_only)
    made.set_priv(True)
    lt.set_piece_hashes(made, str(tmp_path))
    assert lt.bencode(made.generate()[b"info"]) == meta.info
    info = lt.torrent_info(meta.torrent_file(["http://tracker.invalid/announce"]))
    assert str(info.info_hashes().v1) == meta.info_hash and info.priv()


def test_torrent_metadata_round_trips_and_rejects_what_does_not_fit() -> None:
    meta = TorrentMeta.build("ab12", 5 * MIN_PIECE + 1, MIN_PIECE, b"\x01" * 20 * 6)
    entry = meta.to_manifest()
    assert TorrentMeta.from_manifest(entry, meta.length) == meta
    with pytest.raises(FormatError, match="does not describe"):
        TorrentMeta.from_manifest(entry, meta.length + 1)
    with pytest.raises(FormatError, match="info-hash"):
        TorrentMeta.from_manifest(dict(entry, info_hash="00" * 20), meta.length)
    public = bencode({"length": 1, "name": "ab12", "piece length": MIN_PIECE, "pieces": b"x" * 20})
    with pytest.raises(FormatError, match="private"):
        TorrentMeta.from_manifest(dict(entry, info=base64.b64encode(public).decode()), meta.length)
    named = TorrentMeta.build("../etc", 1, MIN_PIECE, b"x" * 20)
    with pytest.raises(FormatError, match="does not describe"):
        TorrentMeta.from_manifest(named.to_manifest(), 1)


def test_bencode_is_canonical_and_the_decoder_strict() -> None:
    value = {"b": [1, -2, b"x"], "a": {"z": b"", "y": 0}}
    raw = bencode(value)
    assert raw == b"d1:ad1:yi0e1:z0:e1:bli1ei-2e1:xee"
    assert bdecode(raw) == {b"a": {b"y": 0, b"z": b""}, b"b": [1, -2, b"x"]}
    for bad in (b"i01e", b"i-0e", b"d1:bi1e1:ai1ee", b"5:abc", b"i1ei2e", b"x", b"l"):
        with pytest.raises(FormatError):
            bdecode(bad)


def test_piece_length_keeps_the_manifest_small() -> None:
    assert piece_length_for(1) == MIN_PIECE
    assert piece_length_for(10 << 30) == 8 * MiB
    assert piece_length_for(1 << 40) == 16 * MiB
