"""``Storage = "Swift+BitTorrent"``: the swarm with a Swift TempURL as its web seed.

``distsync setup --storage swift+bittorrent`` sets the account's TempURL key, signs one
prefix-wide GET TempURL for the artifacts and seals it into the store record; the daemons,
which hold no key that could sign one, hand it to libtorrent as the web seed. Here two real
daemons are told never to read from the store themselves (``TorrentS3Readers = 0``), so the
artifact can only have come through that TempURL.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from distsync.swarm.lt import import_libtorrent
from racesite import Site
from swiftfleet import SwiftFleet, setup_env
from swiftserver import READER, SwiftServer

needs_libtorrent = pytest.mark.skipif(import_libtorrent() is None, reason="needs libtorrent")


@needs_libtorrent
def test_the_tempurl_web_seed_delivers_when_nobody_reads_from_swift(
    tmp_path: Path, swift_server: SwiftServer
) -> None:
    fleet = SwiftFleet(swift_server, f"t-{uuid.uuid4().hex[:20]}", tmp_path)
    args = fleet.setup_args("--storage", "swift+bittorrent", "--daemon-user", READER.name)
    result = fleet.run(*args, env=setup_env())
    assert result.returncode == 0, result.stderr.decode()
    assert 'Storage = "Swift+BitTorrent"' in fleet.daemon.read_text()
    site = Site("swift+bittorrent", tmp_path, fleet.uploader, fleet.daemon)
    try:
        record = site.record()
        assert record is not None and record.temp_url is not None
        assert record.temp_url.key_prefix.endswith("/objects/")
        keys = {"TorrentPort": 0, "TorrentS3Readers": 0, "TorrentWebSeedDelay": 1}
        site.start_daemon(0, **keys)
        site.start_daemon(1, **keys)
        data = os.urandom(3 << 20)
        (tmp_path / "app.bin").write_bytes(data)
        result = site.cli("upload", "-c", str(fleet.uploader), str(tmp_path / "app.bin"))
        assert result.returncode == 0, result.stderr.decode()
        site.wait_installed({"app.bin": data}, timeout=90)
        logs = site.daemon_logs()
        assert "web seed added" in logs and "by ranged GETs" not in logs, logs
        assert "temp_url_sig" not in logs  # the signature never reaches a log
    finally:
        site.close()
