"""Issue 3 end to end on ``Storage = "Local"``, every command a real process.

The daemon runs as ``python -m distsync daemon -c CONF`` with a short poll interval; tests
upload through the CLI and watch what lands in OutputDir. They cover setup, the upload/install
loop (newest wins, mode kept), a replayed manifest, kill -9 and SIGTERM/SIGINT during an
install, a full disk (RLIMIT_FSIZE), a corrupted object, restart without re-download, the
on-update hook, pins, reinstalling a deleted file, list/download, and that no file name ever
appears in the bucket.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import tomli_w

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")

POLL = 0.2
# A version rejected once is tried again one PollInterval later (then 2, 4, ... of them):
# waiting this long makes the first retry due, however fast the machine.
RETRY_DUE = 5 * POLL
TEMP_SUFFIX = ".distsync-tmp"
PART_SUFFIX = ".distsync-part"
INSTALLED = re.compile(
    r"installed (?P<name>\S+) version (?P<version>\d+) sha256 (?P<sha>[0-9a-f]{64}) "
    r"(?P<size>\d+) bytes in (?P<seconds>[0-9.]+) s"
)
BIG_SIZE = 256 << 20
MiB = 1 << 20


# -- helpers -----------------------------------------------------------------------------


def wait_for(
    predicate: Callable[[], T | None], what: str, timeout: float = 20.0, interval: float = 0.02
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(4 * MiB):
            digest.update(block)
    return digest.hexdigest()


def temps_in(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(
        p for p in directory.iterdir() if p.name.endswith((TEMP_SUFFIX, PART_SUFFIX))
    )


def installs(log: str) -> list[dict[str, str]]:
    return [m.groupdict() for m in INSTALLED.finditer(log)]


def write_toml(path: Path, values: dict[str, Any]) -> None:
    path.write_text(tomli_w.dumps(values))
    path.chmod(0o600)


def make_file(path: Path, content: bytes, mode: int = 0o644) -> Path:
    path.write_bytes(content)
    path.chmod(mode)
    return path


@dataclass
class Daemon:
    """A ``distsync daemon`` subprocess whose stderr goes to a log file."""

    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_log(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        def found() -> re.Match[str] | None:
            match = re.search(pattern, self.log())
            if match is None and not self.alive():
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
            return match

        return wait_for(found, f"{pattern!r} in the daemon's log", timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.alive():
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


@dataclass
class Site:
    """One setup: a local bucket, the two configs, an OutputDir and the daemons started."""

    root: Path
    bucket: Path
    out: Path
    upload_conf: Path
    daemon_conf: Path
    daemons: list[Daemon] = field(default_factory=list)

    @classmethod
    def create(cls, root: Path) -> Site:
        site = cls(
            root=root,
            bucket=root / "bucket",
            out=root / "out",
            upload_conf=root / "conf" / "upload.toml",
            daemon_conf=root / "conf" / "daemon.toml",
        )
        (root / "home").mkdir(parents=True, exist_ok=True)
        proc = site.cli(
            "setup",
            "--storage",
            "local",
            "--bucket",
            str(site.bucket),
            "--output-dir",
            str(site.out),
            "--upload-config",
            str(site.upload_conf),
            "--daemon-config",
            str(site.daemon_conf),
            "--non-interactive",
        )
        assert proc.returncode == 0, proc.stderr
        site.update_daemon_conf(PollInterval=POLL, PollJitter=0, StateDir=str(root / "state"))
        return site

    def sibling(self, root: Path) -> Site:
        """Another server on the same bucket: its own OutputDir, state and daemons."""
        (root / "home").mkdir(parents=True, exist_ok=True)
        other = Site(root, self.bucket, root / "out", self.upload_conf, root / "daemon.toml")
        values = tomllib.loads(self.daemon_conf.read_text())
        values.update(OutputDir=str(other.out), StateDir=str(root / "state"))
        write_toml(other.daemon_conf, values)
        return other

    def env(self) -> dict[str, str]:
        env = dict(os.environ, HOME=str(self.root / "home"))
        env.pop("XDG_STATE_HOME", None)
        return env

    def cli(
        self, *args: str, timeout: float = 120, **kw: Any
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "distsync", *args],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            env=self.env(),
            check=False,
            **kw,
        )

    def update_daemon_conf(self, **values: Any) -> None:
        current = tomllib.loads(self.daemon_conf.read_text())
        for key, value in values.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = value
        write_toml(self.daemon_conf, current)

    def update_upload_conf(self, **values: Any) -> None:
        current = tomllib.loads(self.upload_conf.read_text())
        current.update(values)
        write_toml(self.upload_conf, current)

    def upload(self, path: Path, *extra: str) -> tuple[str, str]:
        """Upload one file; returns (version id, sha256) from the printed line."""
        proc = self.cli("upload", "-c", str(self.upload_conf), str(path), *extra)
        assert proc.returncode == 0, proc.stderr
        line = proc.stdout.decode().strip()
        match = re.fullmatch(
            r"(?P<name>\S+)\tversion (?P<v>\d+)\t(?P<size>\d+) bytes\tsha256 (?P<sha>[0-9a-f]{64})",
            line,
        )
        assert match, line
        assert int(match["size"]) == path.stat().st_size
        assert match["sha"] == sha256_file(path)
        return match["v"], match["sha"]

    def once(self, **kw: Any) -> subprocess.CompletedProcess[bytes]:
        return self.cli("daemon", "-c", str(self.daemon_conf), "--once", timeout=120, **kw)

    def start_daemon(self) -> Daemon:
        log_path = self.root / f"daemon-{len(self.daemons)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "distsync", "daemon", "-c", str(self.daemon_conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(),
                start_new_session=True,
            )
        daemon = Daemon(proc, log_path)
        self.daemons.append(daemon)
        return daemon

    def close(self) -> None:
        """Kill whatever is still running (also after a failed test)."""
        for daemon in self.daemons:
            if daemon.alive():
                # Its own session (start_new_session): the group holds it and any hook it ran.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(daemon.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.proc.wait(timeout=10)

    def objects(self) -> set[Path]:
        return set((self.bucket / "distsync" / "v3" / "objects").iterdir())

    def log_dir(self) -> Path:
        return self.bucket / "distsync" / "v3" / "log"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    site = Site.create(tmp_path)
    try:
        yield site
    finally:
        site.close()


class DestinationWatcher(threading.Thread):
    """Watch a destination path for the whole test: absent, or complete and identical.

    Sizes are checked on every look; each new inode seen is hashed once.
    """

    def __init__(self, path: Path, size: int, sha256: str) -> None:
        super().__init__(daemon=True)
        self.path, self.size, self.sha256 = path, size, sha256
        self.halt = threading.Event()
        self.problems: list[str] = []
        self.looks_absent = 0
        self.looks_present = 0
        self._hashed: set[int] = set()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                self.looks_absent += 1
            else:
                self.looks_present += 1
                if st.st_size != self.size:
                    self.problems.append(f"{self.path} seen with {st.st_size} bytes")
                if st.st_ino not in self._hashed:
                    self._check_content()
            time.sleep(0.002)

    def _check_content(self) -> None:
        try:
            with open(self.path, "rb") as handle:
                ino = os.fstat(handle.fileno()).st_ino
                digest = hashlib.sha256()
                while block := handle.read(4 * MiB):
                    digest.update(block)
        except FileNotFoundError:
            return
        self._hashed.add(ino)
        if digest.hexdigest() != self.sha256:
            self.problems.append(f"{self.path} (inode {ino}) seen with other content")

    def finish(self) -> None:
        self.halt.set()
        self.join(timeout=30)
        assert not self.is_alive()


# -- setup -------------------------------------------------------------------------------


def test_setup_writes_two_private_configs_and_refuses_to_overwrite(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home))
    env.pop("XDG_STATE_HOME", None)

    def setup(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "distsync", "setup", "--storage", "local", *args],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            env=env,
            timeout=60,
            check=False,
        )

    proc = setup("--non-interactive")
    assert proc.returncode == 0, proc.stderr
    upload, daemon = home / ".distsync", home / ".distsyncd"
    for path in (upload, daemon):
        assert path.stat().st_mode & 0o777 == 0o600
        assert str(path) in proc.stdout.decode()
    up, dn = tomllib.loads(upload.read_text()), tomllib.loads(daemon.read_text())
    assert up["SharedSecret"] == dn["SharedSecret"] and len(up["SharedSecret"]) == 48
    assert up["Storage"].lower() == dn["Storage"].lower() == "local"
    assert Path(up["StorageBucket"]).is_dir()
    assert Path(up["StorageBucket"]).is_relative_to(home)
    assert dn["OutputDir"] == str(home / "distsync")
    assert "OutputDir" not in up
    before = (upload.read_bytes(), daemon.read_bytes())

    again = setup("--non-interactive")
    assert again.returncode == 2
    lines = again.stderr.decode().splitlines()
    assert len(lines) == 1 and "--force" in lines[0] and ".distsync" in lines[0]
    assert (upload.read_bytes(), daemon.read_bytes()) == before

    forced = setup("--non-interactive", "--force")
    assert forced.returncode == 0, forced.stderr
    assert tomllib.loads(upload.read_text())["SharedSecret"] != up["SharedSecret"]
    assert upload.stat().st_mode & 0o777 == daemon.stat().st_mode & 0o777 == 0o600

    # Explicit paths, in directories that do not exist yet; stdin is not a terminal, so
    # no prompts even without --non-interactive.
    nested = tmp_path / "etc" / "distsync"
    proc = setup(
        "--bucket",
        str(tmp_path / "b2"),
        "--output-dir",
        str(tmp_path / "o2"),
        "--upload-config",
        str(nested / "up.toml"),
        "--daemon-config",
        str(nested / "d.toml"),
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "b2").is_dir()
    assert (nested / "up.toml").stat().st_mode & 0o777 == 0o600
    assert tomllib.loads((nested / "d.toml").read_text())["OutputDir"] == str(tmp_path / "o2")


# -- the main loop -----------------------------------------------------------------------


def test_upload_lands_in_output_dir_with_its_mode_and_newest_wins(site: Site) -> None:
    daemon = site.start_daemon()
    daemon.wait_log("watching")
    first = make_file(site.root / "app.tar.gz", os.urandom(3 * MiB + 5), 0o750)
    v1, sha1 = site.upload(first)
    dest = site.out / "app.tar.gz"
    wait_for(lambda: dest.exists(), "the first upload to land")
    assert dest.read_bytes() == first.read_bytes()
    assert dest.stat().st_mode & 0o7777 == 0o750
    daemon.wait_log(rf"installed app\.tar\.gz version {v1} ")
    (done,) = installs(daemon.log())
    assert (done["name"], done["version"], done["sha"]) == ("app.tar.gz", v1, sha1)
    assert int(done["size"]) == 3 * MiB + 5 and float(done["seconds"]) >= 0

    second = make_file(site.root / "app.tar.gz", os.urandom(2 * MiB), 0o640)
    v2, sha2 = site.upload(second)
    assert int(v2) > int(v1)
    daemon.wait_log(rf"installed app\.tar\.gz version {v2} ")
    assert sha256_file(dest) == sha2
    assert dest.stat().st_mode & 0o7777 == 0o640
    listing = site.cli("list", "-c", str(site.upload_conf), "--json")
    modes = {row["version"]: row["mode"] for row in json.loads(listing.stdout)}
    assert modes == {v1: "0750", v2: "0640"}  # what the manifests say is what was installed
    assert temps_in(site.out) == []
    assert daemon.stop() == 0
    assert "stopped" in daemon.log()


def test_two_uploads_of_one_name_newest_wins(site: Site) -> None:
    src = site.root / "svc.bin"
    site.upload(make_file(src, b"first " * 1000))
    v2, sha2 = site.upload(make_file(src, b"second " * 1000))
    proc = site.once()
    assert proc.returncode == 0, proc.stderr
    done = installs(proc.stderr.decode())
    assert [(d["name"], d["version"], d["sha"]) for d in done] == [("svc.bin", v2, sha2)]
    assert (site.out / "svc.bin").read_bytes() == b"second " * 1000
    # Nothing new: --once succeeds and installs nothing.
    again = site.once()
    assert again.returncode == 0 and installs(again.stderr.decode()) == []


def _forge_log_copy(site: Site, seq: int) -> int:
    """Copy log entry ``seq`` to the next free number and rewrite the marker."""
    entries = sorted(int(p.name) for p in site.log_dir().iterdir() if p.name.isdigit())
    new = entries[-1] + 1
    shutil.copyfile(site.log_dir() / f"{seq:020d}", site.log_dir() / f"{new:020d}")
    marker = site.bucket / "distsync" / "v3" / "marker"
    tmp = marker.with_name("forged-marker")
    tmp.write_text(json.dumps({"latest": new, "nonce": os.urandom(8).hex()}))
    os.replace(tmp, marker)
    return new


def test_older_manifest_copied_under_a_new_key_is_ignored(site: Site) -> None:
    src = site.root / "app.bin"
    site.upload(make_file(src, b"old release\n"))
    v2, sha2 = site.upload(make_file(src, b"new release\n"))
    assert site.once().returncode == 0
    dest = site.out / "app.bin"
    assert sha256_file(dest) == sha2
    before = dest.stat()

    forged = _forge_log_copy(site, 1)
    proc = site.once()
    log = proc.stderr.decode()
    # Signed (as setup configures a store): the signature covers the key. Unsigned: the
    # sealed record's associated data does.
    moved = "authentication|moved|copied here from another key"
    assert re.search(rf"ignoring log entry {forged}: .*({moved})", log), log
    assert installs(log) == []
    assert dest.read_bytes() == b"new release\n"
    assert dest.stat().st_ino == before.st_ino

    listing = site.cli("list", "-c", str(site.upload_conf), "--json")
    assert listing.returncode == 0, listing.stderr
    assert [row["version"] for row in json.loads(listing.stdout)] == [v2, "1"]

    # The log goes on past the forged entry: the next real upload is installed.
    v4, sha4 = site.upload(make_file(src, b"newer release\n"))
    assert int(v4) > forged
    proc = site.once()
    assert proc.returncode == 0, proc.stderr
    assert sha256_file(dest) == sha4


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


CORRUPTIONS: dict[str, Callable[[Path, Path], object]] = {
    # (the newest upload's object, the previous upload's object) -> corrupt the newest
    "flip-in-header": lambda new, old: _flip_byte(new, 20),
    "flip-in-last-chunk": lambda new, old: _flip_byte(new, new.stat().st_size - 40),
    "flip-in-middle-chunk": lambda new, old: _flip_byte(new, new.stat().st_size // 2),
    "truncated": lambda new, old: os.truncate(new, new.stat().st_size - 16384 - 48),
    # A genuine object of the same size under the same secret, moved to the new key.
    "swapped-for-previous-object": lambda new, old: shutil.copyfile(old, new),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupted_object_never_reaches_output_dir(site: Site, corruption: str) -> None:
    site.update_upload_conf(ChunkSize=16384)  # many chunks, so some verify before the bad one
    src = site.root / "app.bin"
    good = os.urandom(300_000)
    site.upload(make_file(src, good, 0o644))
    first = site.once()
    assert first.returncode == 0, first.stderr
    dest = site.out / "app.bin"
    before = dest.stat()

    (old_object,) = objects = site.objects()
    v2, _ = site.upload(make_file(src, os.urandom(300_000), 0o755))
    (new_object,) = site.objects() - objects
    CORRUPTIONS[corruption](new_object, old_object)

    proc = site.once()
    log = proc.stderr.decode()
    assert proc.returncode != 0, log
    assert re.search(rf"ERROR rejected app\.bin version {v2}: ", log), log
    if corruption == "swapped-for-previous-object":
        # Every chunk verifies: the signed manifest's digest of the chunk tags refuses it.
        assert "does not match the manifest's chunk tags" in log, log
    assert installs(log) == []
    assert dest.read_bytes() == good
    after = dest.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_mode) == (
        before.st_ino,
        before.st_mtime_ns,
        before.st_mode,
    )
    assert temps_in(site.out) == []

    # A rejected version is tried again with backoff (a tamper may be undone); while it
    # still fails, what is installed stays. A good upload still goes through.
    time.sleep(RETRY_DUE)
    again = site.once()
    retried = again.stderr.decode()
    assert again.returncode != 0
    assert re.search(rf"ERROR app\.bin version {v2} still fails verification", retried)
    assert installs(retried) == []
    assert dest.read_bytes() == good
    _, sha3 = site.upload(make_file(src, b"fixed\n"))
    proc = site.once()
    assert proc.returncode == 0, proc.stderr
    assert sha256_file(dest) == sha3


def test_deleted_file_comes_back_when_the_newest_upload_was_rejected(site: Site) -> None:
    """A rejected newest version must not stop the good installed one from coming back."""
    src = site.root / "app.bin"
    v1, sha1 = site.upload(make_file(src, os.urandom(100_000)))
    assert site.once().returncode == 0
    objects = site.objects()
    site.upload(make_file(src, os.urandom(100_000)))
    (new_object,) = site.objects() - objects
    _flip_byte(new_object, new_object.stat().st_size - 40)
    assert site.once().returncode != 0  # rejected; version 1 stays
    dest = site.out / "app.bin"
    assert sha256_file(dest) == sha1

    dest.unlink()
    time.sleep(RETRY_DUE)  # version 2 is tried again first, and fails again
    proc = site.once()
    log = proc.stderr.decode()
    assert "removed" in log
    assert dest.exists(), "the deleted file was not installed again:\n" + log
    assert sha256_file(dest) == sha1
    assert [d["version"] for d in installs(log)] == [v1]
    # Version 2's retry was due and failed again: the cycle reports that failure.
    assert "version 2 still fails verification" in log
    assert proc.returncode == 1, log


def test_full_disk_gives_a_clear_error_and_removes_the_temp_file(site: Site) -> None:
    src = site.root / "app.bin"
    small = b"small release\n"
    site.upload(make_file(src, small))
    assert site.once().returncode == 0
    dest = site.out / "app.bin"

    big = os.urandom(4 * MiB)
    v2, sha2 = site.upload(make_file(src, big))
    limit = MiB

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    proc = site.once(preexec_fn=small_disk)
    log = proc.stderr.decode()
    assert proc.returncode != 0, log
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1, log
    assert f"app.bin version {v2}" in errors[0]
    assert str(dest) in errors[0] and "file too large" in errors[0]
    assert "Traceback" not in log
    assert temps_in(site.out) == []
    assert dest.read_bytes() == small

    # The failure was a passing one: with room again, the next cycle installs it.
    proc = site.once()
    assert proc.returncode == 0, proc.stderr
    assert [d["version"] for d in installs(proc.stderr.decode())] == [v2]
    assert sha256_file(dest) == sha2


def test_restart_does_not_download_again(site: Site) -> None:
    src = make_file(site.root / "app.bin", os.urandom(MiB))
    v1, _ = site.upload(src)
    daemon = site.start_daemon()
    daemon.wait_log(rf"installed app\.bin version {v1} ")
    assert daemon.stop() == 0
    dest = site.out / "app.bin"
    before = dest.stat()

    again = site.start_daemon()
    again.wait_log("watching")
    time.sleep(6 * POLL)  # several polls
    assert again.stop() == 0
    once = site.once()
    assert once.returncode == 0, once.stderr
    assert installs(again.log()) == [] and installs(once.stderr.decode()) == []
    after = dest.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_deleted_installed_file_is_installed_again(site: Site) -> None:
    src = make_file(site.root / "app.bin", os.urandom(200_000))
    v1, sha1 = site.upload(src)
    assert site.once().returncode == 0
    dest = site.out / "app.bin"
    dest.unlink()
    proc = site.once()
    log = proc.stderr.decode()
    assert proc.returncode == 0, log
    assert "removed" in log
    assert [d["version"] for d in installs(log)] == [v1]
    assert sha256_file(dest) == sha1

    # The long-running daemon notices too, with no new upload.
    daemon = site.start_daemon()
    daemon.wait_log("watching")
    dest.unlink()
    wait_for(dest.exists, "the deleted file to come back")
    assert sha256_file(dest) == sha1
    assert daemon.stop() == 0


# -- the on-update hook ------------------------------------------------------------------

HOOK = """\
import hashlib, json, os, sys
env = {k: v for k, v in os.environ.items() if k.startswith("DISTSYNC_")}
with open(env["DISTSYNC_PATH"], "rb") as handle:
    env["content_sha256"] = hashlib.sha256(handle.read()).hexdigest()
with open(os.path.join(sys.argv[1], env["DISTSYNC_VERSION"] + ".json"), "w") as out:
    json.dump(env, out)
"""

FAILING_HOOK = """\
import sys
sys.stderr.write("hook exploded\\n")
sys.exit(7)
"""


def test_on_update_hook_gets_path_name_version_and_sha(site: Site) -> None:
    script = make_file(site.root / "hook.py", HOOK.encode())
    seen = site.root / "hook-runs"
    seen.mkdir()
    site.update_daemon_conf(OnUpdate=[sys.executable, str(script), str(seen)])
    v1, sha1 = site.upload(make_file(site.root / "app.bin", os.urandom(100_000)))
    proc = site.once()
    assert proc.returncode == 0, proc.stderr
    record = json.loads((seen / f"{v1}.json").read_text())
    assert record == {
        "DISTSYNC_PATH": str(site.out / "app.bin"),
        "DISTSYNC_NAME": "app.bin",
        "DISTSYNC_VERSION": v1,
        "DISTSYNC_SHA256": sha1,
        "content_sha256": sha1,  # the hook runs after the file is in place
    }
    # No install, no hook.
    assert site.once().returncode == 0
    assert sorted(p.name for p in seen.iterdir()) == [f"{v1}.json"]


def test_failing_hook_is_logged_but_not_fatal(site: Site) -> None:
    script = make_file(site.root / "fail.py", FAILING_HOOK.encode())
    site.update_daemon_conf(OnUpdate=[sys.executable, str(script)])
    daemon = site.start_daemon()
    daemon.wait_log("watching")
    src = site.root / "app.bin"
    v1, _ = site.upload(make_file(src, b"one\n"))
    daemon.wait_log(rf"installed app\.bin version {v1} ")
    daemon.wait_log("hook exploded")
    assert re.search(r"ERROR OnUpdate hook .* exited 7 for app\.bin", daemon.log())
    v2, sha2 = site.upload(make_file(src, b"two\n"))
    daemon.wait_log(rf"installed app\.bin version {v2} ")
    assert daemon.alive()
    assert sha256_file(site.out / "app.bin") == sha2
    assert daemon.stop() == 0
    # The installs stand: a restart has nothing to do.
    proc = site.once()
    assert installs(proc.stderr.decode()) == []


# -- pins --------------------------------------------------------------------------------


def test_pin_installs_an_older_version_and_holds_it(site: Site) -> None:
    src = site.root / "app.bin"
    v1, sha1 = site.upload(make_file(src, b"release one\n"))
    _, sha2 = site.upload(make_file(src, b"release two\n"))
    assert site.once().returncode == 0
    dest = site.out / "app.bin"
    assert sha256_file(dest) == sha2

    site.update_daemon_conf(Pin={"app.bin": v1})
    proc = site.once()
    assert proc.returncode == 0, proc.stderr
    assert [d["version"] for d in installs(proc.stderr.decode())] == [v1]
    assert sha256_file(dest) == sha1

    # Held: no reinstall, and a newer upload is not installed while pinned.
    assert installs(site.once().stderr.decode()) == []
    site.upload(make_file(src, b"release three\n"))
    proc = site.once()
    assert proc.returncode == 0 and installs(proc.stderr.decode()) == []
    assert sha256_file(dest) == sha1


def test_removing_a_pin_returns_to_the_newest_version(site: Site) -> None:
    """README: the pin holds "until you remove the pin; then the newest version returns"."""
    src = site.root / "app.bin"
    v1, _ = site.upload(make_file(src, b"release one\n"))
    _, sha2 = site.upload(make_file(src, b"release two\n"))
    assert site.once().returncode == 0
    site.update_daemon_conf(Pin={"app.bin": v1})
    assert site.once().returncode == 0
    site.update_daemon_conf(Pin=None)
    proc = site.once()
    assert proc.returncode == 0, proc.stderr
    assert sha256_file(site.out / "app.bin") == sha2, (
        "after the pin was removed the daemon stayed on the pinned version:\n"
        + proc.stderr.decode()
    )


# -- list, download, and what the bucket holds --------------------------------------------


def test_list_and_download(site: Site, tmp_path: Path) -> None:
    conf = str(site.upload_conf)
    a1 = make_file(tmp_path / "a1", b"alpha one\n")
    b1 = make_file(tmp_path / "b1", b"beta one\n" * 100)
    a2 = make_file(tmp_path / "a2", b"alpha two\n", 0o600)
    va1, sa1 = site.upload(a1, "--name", "alpha.tgz")
    vb1, sb1 = site.upload(b1, "--name", "beta.tgz")
    va2, sa2 = site.upload(a2, "--name", "alpha.tgz")

    proc = site.cli("list", "-c", conf, "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [(r["name"], r["version"], r["sha256"], r["size"]) for r in rows] == [
        ("alpha.tgz", va2, sa2, 10),
        ("beta.tgz", vb1, sb1, 900),
        ("alpha.tgz", va1, sa1, 10),
    ]
    assert rows[0]["mode"] == "0600"
    assert rows[0]["uploaded_at"] >= rows[2]["uploaded_at"]

    proc = site.cli("list", "-c", conf)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.decode().splitlines()
    assert lines[0].split()[:2] == ["NAME", "VERSION"]
    table = [line.split() for line in lines[1:]]
    assert [(r[0], r[1], r[-1]) for r in table] == [
        ("alpha.tgz", va2, sa2[:12]),
        ("beta.tgz", vb1, sb1[:12]),
        ("alpha.tgz", va1, sa1[:12]),
    ]
    only = site.cli("list", "-c", conf, "alpha.tgz", "--json")
    assert [r["version"] for r in json.loads(only.stdout)] == [va2, va1]

    dl = tmp_path / "dl"
    dl.mkdir()
    proc = site.cli("download", "-c", conf, "alpha.tgz", "-o", str(dl))
    assert proc.returncode == 0, proc.stderr
    assert (dl / "alpha.tgz").read_bytes() == b"alpha two\n"
    assert (dl / "alpha.tgz").stat().st_mode & 0o777 == 0o600
    proc = site.cli("download", "-c", conf, "alpha.tgz", "--version", va1, "-o", str(dl))
    assert proc.returncode == 0, proc.stderr
    assert (dl / "alpha.tgz").read_bytes() == b"alpha one\n"
    assert f"version {va1}" in proc.stdout.decode()

    # A version of another name, an unknown name, a missing directory: one line, no file.
    for args in (
        ("alpha.tgz", "--version", vb1, "-o", str(dl)),
        ("gamma.tgz", "-o", str(dl)),
        ("alpha.tgz", "--version", "999", "-o", str(dl)),
        ("alpha.tgz", "-o", str(tmp_path / "missing")),
    ):
        proc = site.cli("download", "-c", conf, *args)
        assert proc.returncode != 0
        errors = proc.stderr.decode().splitlines()
        assert len(errors) == 1 and errors[0].startswith("distsync: error: "), errors
    assert sorted(p.name for p in dl.iterdir()) == ["alpha.tgz"]
    assert (dl / "alpha.tgz").read_bytes() == b"alpha one\n"
    assert not (tmp_path / "missing").exists()


def test_no_file_name_appears_in_the_bucket(site: Site, tmp_path: Path) -> None:
    site.update_upload_conf(Uploader="ci-runner-kangaroo")
    names = ["quokka-release-42.tar.gz", "wombat.img"]
    for i, name in enumerate(names + names[:1]):
        site.upload(make_file(tmp_path / name, f"payload {i} of {name}\n".encode() * 50))
    assert site.once().returncode == 0  # the daemon side writes nothing revealing either
    words = ["quokka", "wombat", "release-42", "kangaroo", "payload"]
    seen_files = 0
    for directory, subdirs, files in os.walk(site.bucket):
        for entry in [*subdirs, *files]:
            for word in words:
                assert word not in entry.lower(), os.path.join(directory, entry)
        for entry in files:
            data = Path(directory, entry).read_bytes().lower()
            seen_files += 1
            for word in words:
                assert word.encode() not in data, os.path.join(directory, entry)
                assert word.encode("utf-16-le") not in data, os.path.join(directory, entry)
    assert seen_files >= 7  # 3 objects, 3 log entries, the marker


# -- interruptions during a long install ---------------------------------------------------


@dataclass(frozen=True)
class Big:
    site: Site
    size: int
    sha256: str
    version: str


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Big]:
    """One bucket holding a large artifact (256 MiB, every MiB distinct), uploaded once."""
    root = tmp_path_factory.mktemp("big")
    site = Site.create(root)
    src = root / "big.bin"
    block = bytearray(os.urandom(MiB))
    digest = hashlib.sha256()
    with open(src, "wb") as handle:
        for i in range(BIG_SIZE // MiB):
            block[:8] = i.to_bytes(8, "big")
            handle.write(block)
            digest.update(block)
    version, sha = site.upload(src)
    assert sha == digest.hexdigest()
    src.unlink()
    try:
        yield Big(site, BIG_SIZE, sha, version)
    finally:
        site.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def server(big: Big, tmp_path: Path) -> Iterator[Site]:
    """A fresh server (OutputDir, state) on the big bucket."""
    site = big.site.sibling(tmp_path)
    try:
        yield site
    finally:
        site.close()
        shutil.rmtree(site.out, ignore_errors=True)


def wait_for_partial_temp(site: Site, daemon: Daemon) -> Path:
    """Wait until an install is under way: a temp file with some data in OutputDir."""

    def partial() -> Path | None:
        if not daemon.alive():
            raise AssertionError(f"daemon exited early:\n{daemon.log()}")
        for tmp in temps_in(site.out):
            with contextlib.suppress(FileNotFoundError):
                if tmp.name.startswith(".big.bin.") and tmp.stat().st_size >= 8 * MiB:
                    return tmp
        return None

    return wait_for(partial, "an install to start", timeout=60, interval=0.002)


def test_kill_9_during_install_then_restart_completes(big: Big, server: Site) -> None:
    dest = server.out / "big.bin"
    watcher = DestinationWatcher(dest, big.size, big.sha256)
    watcher.start()
    try:
        daemon = server.start_daemon()
        tmp = wait_for_partial_temp(server, daemon)
        daemon.proc.kill()
        assert daemon.proc.wait(timeout=10) == -signal.SIGKILL
        assert tmp.exists() and tmp.stat().st_size < big.size
        assert not dest.exists()

        kept = tmp.stat().st_size
        again = server.start_daemon()
        again.wait_log(rf"installed big\.bin version {big.version} sha256 {big.sha256} ", 90)
        # The crashed download is continued from its whole chunks, not started over.
        resumed = re.search(r"big\.bin: continuing a download after (\d+) chunks", again.log())
        assert resumed, again.log()
        assert int(resumed.group(1)) > 0 and kept > 0
        assert "fetching it whole" not in again.log()  # the kept chunks were good
        assert temps_in(server.out) == []
        assert again.stop() == 0
    finally:
        watcher.finish()
    assert watcher.problems == []
    assert watcher.looks_absent > 0 and watcher.looks_present > 0
    assert sha256_file(dest) == big.sha256


def test_a_damaged_part_file_is_not_resumed_but_fetched_whole(big: Big, server: Site) -> None:
    """The kept prefix of a crashed download is plaintext read back from disk, which no MAC
    covers: the SHA-256 of the whole file has to match, and a mismatch starts afresh."""
    dest = server.out / "big.bin"
    daemon = server.start_daemon()
    tmp = wait_for_partial_temp(server, daemon)
    daemon.proc.kill()
    assert daemon.proc.wait(timeout=10) == -signal.SIGKILL
    with open(tmp, "r+b") as part:  # a bit flipped in the first kept chunk
        part.seek(100)
        byte = part.read(1)[0]
        part.seek(100)
        part.write(bytes([byte ^ 0x01]))

    again = server.start_daemon()
    again.wait_log(rf"installed big\.bin version {big.version} sha256 {big.sha256} ", 90)
    assert "big.bin: continuing a download after" in again.log()
    assert "resumed download of big.bin failed verification; fetching it whole" in again.log()
    assert again.stop() == 0
    assert temps_in(server.out) == []
    assert sha256_file(dest) == big.sha256


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_install_stops_cleanly(big: Big, server: Site, sig: int) -> None:
    dest = server.out / "big.bin"
    daemon = server.start_daemon()
    wait_for_partial_temp(server, daemon)
    started = time.monotonic()
    daemon.proc.send_signal(sig)
    assert daemon.proc.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    assert temps_in(server.out) == []
    assert not dest.exists()
    log = daemon.log()
    assert f"received {signal.Signals(sig).name}" in log
    assert "Traceback" not in log


def test_install_stopped_by_sigterm_completes_after_restart(big: Big, server: Site) -> None:
    """A clean stop mid-install must not make the daemon forget that version."""
    daemon = server.start_daemon()
    wait_for_partial_temp(server, daemon)
    assert daemon.stop(signal.SIGTERM) == 0
    assert not (server.out / "big.bin").exists()
    proc = server.once()
    assert proc.returncode == 0, proc.stderr
    assert [d["version"] for d in installs(proc.stderr.decode())] == [big.version], (
        "the interrupted install was not resumed after a restart:\n" + proc.stderr.decode()
    )
    assert sha256_file(server.out / "big.bin") == big.sha256
