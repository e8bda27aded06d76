"""Attacks on the store by whoever can write to it, without the secret (issue 11, "bounded
work per object"): one test per attack, named after it, python-tuf style.

Such a writer can deny service while the damage stands, nothing more: a small object (log
entry, marker, record) over the size limit is refused without being read, a directory store
reads only regular files and follows no symbolic link below its root, and one bad key costs
that key only, never a whole daemon cycle. Where the attack is on the daemon, a real
``distsync daemon --once`` runs with a cap on its address space, so that a reader without the
guard fails fast with MemoryError instead of exhausting the machine.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from distsync.errors import FormatError, NotAnObjectError, ObjectTooLargeError, StorageError
from distsync.manifest import MANIFEST
from distsync.storage import SMALL_OBJECT_LIMIT
from distsync.storage.local import LocalStore
from distsync.storage.s3 import S3Store
from distsync.swarm.peerbook import PEER_RECORD
from faultproxy import FaultProxy
from s3server import ACCESS_KEY, SECRET_KEY, Bucket

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

GiB = 1 << 30
MiB = 1 << 20
PREFIX = "distsync/v3/"
# A daemon or CLI process needs well under 512 MiB of address space here; one that loads a
# 3 GiB object, or reads /dev/zero, runs out of it at once.
MEMORY_CAP = 1 * GiB
# Bounded, and generous: the machine is shared. A hung cycle shows as this timeout.
CYCLE_TIMEOUT = 90

RunCli = Callable[..., "subprocess.CompletedProcess[bytes]"]


def log_key(seq: int) -> str:
    return f"{PREFIX}log/{seq:020d}"


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


@dataclass
class Site:
    """A Local store set up by the real ``distsync setup``, its two configs and OutputDir."""

    root: Path
    run: RunCli

    @property
    def bucket(self) -> Path:
        return self.root / "bucket"

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def upload_conf(self) -> Path:
        return self.root / "upload.toml"

    @property
    def daemon_conf(self) -> Path:
        return self.root / "daemon.toml"

    def path(self, key: str) -> Path:
        return self.bucket / key

    def cli(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
        return self.run(*args, **kw)

    def upload(self, name: str, content: bytes) -> None:
        source = self.root / "src" / name
        source.parent.mkdir(exist_ok=True)
        source.write_bytes(content)
        done = self.cli("upload", "-c", str(self.upload_conf), str(source))
        assert done.returncode == 0, done.stderr.decode()

    def once(self) -> subprocess.CompletedProcess[bytes]:
        """One daemon cycle, capped in memory and time; a hung cycle fails the test."""
        try:
            return self.cli(
                "daemon",
                "-c",
                str(self.daemon_conf),
                "--once",
                timeout=CYCLE_TIMEOUT,
                memory_limit=MEMORY_CAP,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"daemon --once did not finish its cycle within {CYCLE_TIMEOUT} s")

    def installed(self) -> dict[str, bytes]:
        if not self.out.is_dir():
            return {}
        return {p.name: p.read_bytes() for p in self.out.iterdir() if not p.name.startswith(".")}


@pytest.fixture
def site(tmp_path: Path, run_cli: RunCli) -> Site:
    site = Site(tmp_path, run_cli)
    done = run_cli(
        "setup",
        "--storage",
        "local",
        "--non-interactive",
        "--bucket",
        str(site.bucket),
        "--output-dir",
        str(site.out),
        "--upload-config",
        str(site.upload_conf),
        "--daemon-config",
        str(site.daemon_conf),
    )
    assert done.returncode == 0, done.stderr.decode()
    values = tomllib.loads(site.daemon_conf.read_text())
    values.update(StateDir=str(tmp_path / "state"), PollInterval=0.2, PollJitter=0)
    site.daemon_conf.write_text(tomli_w.dumps(values))
    return site


def assert_installs_around_junk(site: Site, junk: Callable[[Path], object], reason: str) -> str:
    """Upload a.txt, plant ``junk`` at the next log key, upload b.txt: one daemon cycle
    installs both, says why it skipped the junk (``reason``, a pattern), and fails nothing."""
    site.upload("a.txt", b"first")
    junk(site.path(log_key(2)))
    site.upload("b.txt", b"second")
    assert site.path(log_key(3)).is_file()  # the uploader stepped over the junk
    done = site.once()
    log = done.stderr.decode()
    assert "internal error" not in log and "Traceback" not in log, log
    assert site.installed() == {"a.txt": b"first", "b.txt": b"second"}, log
    assert re.search(reason, log), log
    assert done.returncode == 0, log
    return log


def not_regular(kind: str) -> str:
    """What a listing says about junk at log entry 2 that is not a regular file."""
    return re.escape(
        f"ignoring what is not a regular file under {PREFIX}log/: {log_key(2)[-20:]} ({kind})"
    )


# -- oversized small objects -------------------------------------------------------------


def test_sparse_giant_log_entry_is_refused_without_reading_it(site: Site) -> None:
    def giant(path: Path) -> None:
        with open(path, "wb") as handle:
            handle.truncate(3 * GiB)  # sparse: costs no disk, 3 GiB to whoever reads it

    assert_installs_around_junk(
        site, giant, f"ignoring log entry 2: .* holds {3 * GiB} bytes, more than the {MiB}"
    )


def test_log_entry_symlinked_to_dev_zero_is_refused(site: Site) -> None:
    assert_installs_around_junk(
        site, lambda path: path.symlink_to("/dev/zero"), not_regular("a symbolic link")
    )


def _bytes_read_by_this_process() -> int:
    """``rchar`` of /proc/self/io: every byte read() and pread() returned, all threads."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_oversized_object_in_a_local_store_is_refused_by_its_size(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    (tmp_path / "big").write_bytes(b"")
    os.truncate(tmp_path / "big", 64 * MiB)
    before = _bytes_read_by_this_process()
    with pytest.raises(ObjectTooLargeError) as refused:
        store.get("big")
    assert _bytes_read_by_this_process() - before < 64 * 1024  # nothing of it was read
    assert isinstance(refused.value, FormatError)  # readers reject it like a forged entry
    message = one_line(str(refused.value))
    assert f"big holds {64 * MiB} bytes, more than the {SMALL_OBJECT_LIMIT} bytes" in message
    # A caller that expects a large object says so.
    assert len(store.get("big", limit=64 * MiB)) == 64 * MiB
    (tmp_path / "exact").write_bytes(b"x" * 100)
    assert store.get("exact", limit=100) == b"x" * 100
    with pytest.raises(ObjectTooLargeError):
        store.get("exact", limit=99)


def test_every_sealed_record_kind_fits_the_small_object_limit() -> None:
    # Genuine small objects must never be refused: each kind is capped below the limit.
    for kind in (MANIFEST, PEER_RECORD):
        assert kind.max_size <= SMALL_OBJECT_LIMIT, kind.noun


def s3_store(endpoint: str, bucket: str) -> S3Store:
    import boto3
    from distsync.storage.s3 import client_config

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=client_config(
            endpoint=endpoint, connect_timeout=5, read_timeout=30, max_attempts=2, pool=4
        ),
    )
    return S3Store(client, bucket, endpoint=endpoint)


def test_giant_object_on_s3_is_refused_after_at_most_limit_bytes(
    bucket: Bucket, fault_proxy: FaultProxy
) -> None:
    bucket.client.put_object(Bucket=bucket.name, Key="giant", Body=b"\0" * (48 * MiB))
    store = s3_store(fault_proxy.endpoint, bucket.name)
    fault_proxy.clear()
    with pytest.raises(ObjectTooLargeError) as refused:
        store.get("giant")
    assert f"giant holds {48 * MiB} bytes" in one_line(str(refused.value))
    assert fault_proxy.counts["GET"] == 1  # one request decides
    assert fault_proxy.counts["body bytes"] <= SMALL_OBJECT_LIMIT + 1
    # Small objects still read whole, the empty one too, and an explicit limit is exact.
    for body in (b"", b"m" * 1000):
        bucket.client.put_object(Bucket=bucket.name, Key="small", Body=body)
        assert store.get("small") == body
    assert store.get("small", limit=1000) == b"m" * 1000
    with pytest.raises(ObjectTooLargeError):
        store.get("small", limit=999)


def test_giant_log_entry_on_s3_costs_the_daemon_no_download(
    bucket: Bucket,
    fault_proxy: FaultProxy,
    tmp_path: Path,
    write_config: Callable[..., Path],
    run_cli: RunCli,
) -> None:
    def conf(name: str, endpoint: str, **extra: Any) -> Path:
        values: dict[str, Any] = {
            "SharedSecret": "{secret}",
            "StorageBucket": bucket.name,
            "Storage": "S3",
            **extra,
            "AwsCreds": {
                "AccessKey": ACCESS_KEY,
                "SecretKey": SECRET_KEY,
                "Endpoint": endpoint,
            },
        }
        return write_config(tomli_w.dumps(values), name)

    uploader = conf("up.toml", bucket.endpoint)
    daemon = conf(
        "d.toml",
        fault_proxy.endpoint,
        OutputDir=str(tmp_path / "out"),
        StateDir=str(tmp_path / "state"),
    )
    source = tmp_path / "a.txt"
    source.write_bytes(b"first")
    assert run_cli("upload", "-c", str(uploader), str(source)).returncode == 0
    bucket.client.put_object(Bucket=bucket.name, Key=log_key(2), Body=b"\0" * (48 * MiB))
    source.write_bytes(b"second")
    assert run_cli("upload", "-c", str(uploader), str(source), "--name", "b.txt").returncode == 0
    fault_proxy.clear()
    done = run_cli("daemon", "-c", str(daemon), "--once", timeout=CYCLE_TIMEOUT)
    log = done.stderr.decode()
    assert done.returncode == 0, log
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"a.txt", "b.txt"}
    assert f"ignoring log entry 2: S3 bucket {bucket.name}" in log
    assert f"holds {48 * MiB} bytes" in log
    # Two tiny artifacts, two manifests and the marker: far below one copy of the junk.
    assert fault_proxy.counts["body bytes"] < 2 * MiB, fault_proxy.counts


# -- what is not a regular file, in a directory store -----------------------------------


def test_fifo_in_the_log_does_not_hang_the_daemon(site: Site) -> None:
    assert_installs_around_junk(site, os.mkfifo, not_regular("a FIFO"))


def test_directory_at_a_log_key_blocks_no_install(site: Site) -> None:
    assert_installs_around_junk(site, Path.mkdir, not_regular("a directory"))


def test_fifo_marker_does_not_hang_an_upload(site: Site) -> None:
    site.upload("a.txt", b"first")
    marker = site.path(PREFIX + "marker")
    marker.unlink()
    os.mkfifo(marker)
    source = site.root / "b.txt"
    source.write_bytes(b"second")
    try:
        done = site.cli("upload", "-c", str(site.upload_conf), str(source), timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("upload blocked on a FIFO at the marker")
    # Refused in one line (exit 3), or stepped over (the marker is only a hint): never a hang.
    if done.returncode != 0:
        assert done.returncode == 3 and "marker is a FIFO" in one_line(done.stderr.decode())


def test_a_version_that_is_a_directory_fails_alone_and_clearly(site: Site) -> None:
    site.upload("a.txt", b"first")
    site.path(log_key(2)).mkdir()
    done = site.cli("download", "-c", str(site.upload_conf), "a.txt", "--version", "2")
    line = one_line(done.stderr.decode())
    assert done.returncode == 3, line
    assert f"{log_key(2)} is a directory, not a regular file" in line
    out = site.root / "dl"
    out.mkdir()
    ok = site.cli("download", "-c", str(site.upload_conf), "a.txt", "-o", str(out))
    assert ok.returncode == 0 and (out / "a.txt").read_bytes() == b"first"


def test_listing_leaves_out_what_is_not_a_regular_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("log/1", b"one")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.write_bytes(b"elsewhere")
    (tmp_path / "log" / "2").mkdir()
    os.mkfifo(tmp_path / "log" / "3")
    (tmp_path / "log" / "4").symlink_to(outside)
    (tmp_path / "log" / "5").symlink_to("/dev/zero")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "log" / "6"))
        store.put("log/7", b"seven")
        assert list(store.list_after("log/", "log/")) == ["log/1", "log/7"]
        for key, kind in [
            ("log/2", "a directory"),
            ("log/3", "a FIFO"),
            ("log/4", "a symbolic link"),
            ("log/5", "a symbolic link"),
            ("log/6", "a socket"),
        ]:
            for read in (store.get, store.size, lambda k: store.get_range(k, 0, 10)):
                with pytest.raises(NotAnObjectError, match=f"{key} is {kind}, not a regular"):
                    read(key)


def test_log_entry_symlinked_outside_the_store_is_refused(site: Site) -> None:
    """Even a genuine entry is not read through a link: the store reads only what is in it."""
    site.upload("a.txt", b"first")
    entry = site.path(log_key(1))
    outside = site.root / "outside-entry"
    entry.rename(outside)
    entry.symlink_to(outside)
    done = site.once()
    log = done.stderr.decode()
    assert f"not a regular file under {PREFIX}log/: {log_key(1)[-20:]} (a symbolic link)" in log
    assert site.installed() == {}


@pytest.mark.parametrize("directory", ["log", "objects"])
def test_symlinked_store_directory_is_never_written_through(site: Site, directory: str) -> None:
    site.upload("a.txt", b"first")
    inside = site.path(PREFIX + directory)
    outside = site.root / f"outside-{directory}"
    inside.rename(outside)
    inside.symlink_to(outside, target_is_directory=True)
    before = sorted(p.name for p in outside.iterdir())
    source = site.root / "b.txt"
    source.write_bytes(b"second")
    done = site.cli("upload", "-c", str(site.upload_conf), str(source))
    line = one_line(done.stderr.decode())
    assert done.returncode == 4, line
    assert f"{PREFIX}{directory} is a symbolic link, and a Local store follows none" in line
    assert sorted(p.name for p in outside.iterdir()) == before  # nothing written there
    # The daemon does not read through it either, and says why in one line per cycle.
    cycle = site.once()
    assert cycle.returncode == 1 and "is a symbolic link" in cycle.stderr.decode()
    assert site.installed() == {}


def test_a_store_whose_root_is_a_link_still_works(tmp_path: Path) -> None:
    """The operator chose the root: a link there is followed; below it, none is."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    store = LocalStore(tmp_path / "link")
    assert store.create("log/1", b"one") and not store.create("log/1", b"again")
    store.put("marker", b"m")
    assert store.get("log/1") == b"one" and (real / "log" / "1").read_bytes() == b"one"
    assert list(store.list_after("log/", "")) == ["log/1"]
    assert store.changed("marker", None) and store.size("marker") == 1
    writer = store.writer("objects/x")
    writer.write(b"abc")
    writer.commit()
    assert store.get_range("objects/x", 1, 10) == b"bc"
    assert sorted(p.name for p in (real / "objects").iterdir()) == ["x"]  # no temp left
    with pytest.raises(StorageError, match="does not exist"):
        LocalStore(tmp_path / "missing").get("x")
