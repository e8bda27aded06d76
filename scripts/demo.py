"""``make demo``: the whole distsync loop on this machine, with no cloud account.

In a temporary directory: ``distsync setup --storage local`` (a directory plays the bucket),
start ``distsync daemon`` as a server would, build a small tarball, ``distsync upload`` it as CI
would, wait until the daemon has installed it, compare SHA-256, show what the bucket holds
(no file names anywhere), and stop the daemon with SIGTERM.

Run it with the project's venv: ``.venv/bin/python scripts/demo.py [--keep]``.
Exit status 0 on success; otherwise one line saying what went wrong.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import tomli_w

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - older Pythons
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
ARTIFACT = "myapp-1.4.2.tar.gz"
POLL_INTERVAL = 0.5
START_TIMEOUT = 15.0
LAND_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


class DemoError(Exception):
    """A step failed; the message is the one line the user sees."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def human(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


class Demo:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.bucket = root / "bucket"
        self.ci = root / "ci"
        self.server = root / "server"
        self.out = self.server / "artifacts"
        self.upload_conf = self.ci / "distsync.toml"
        self.daemon_conf = self.server / "distsyncd.toml"
        self.daemon_log = self.server / "daemon.log"
        self.daemon: subprocess.Popen[bytes] | None = None
        self.env = dict(os.environ, HOME=str(root / "home"))
        self.env.pop("XDG_STATE_HOME", None)
        # Works from a fresh clone even if the engine is not pip-installed in this Python.
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO / "python"), *filter(None, [os.environ.get("PYTHONPATH")])]
        )

    # -- running distsync ---------------------------------------------------------------

    def distsync(self, *args: str, timeout: float = 60) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "distsync", *args],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            env=self.env,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            detail = proc.stderr.decode(errors="replace").strip().splitlines()
            raise DemoError(
                f"`distsync {args[0]}` exited {proc.returncode}: "
                + (detail[-1] if detail else "(no message)")
            )
        return proc.stdout.decode()

    def log_text(self) -> str:
        try:
            return self.daemon_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, what: str, timeout: float, check: Callable[[], bool]) -> float:
        """Poll ``check`` until true; returns the seconds it took."""
        started = time.monotonic()
        while not check():
            if self.daemon is not None and self.daemon.poll() is not None:
                raise DemoError(
                    f"the daemon exited ({self.daemon.returncode}) while waiting for {what}"
                )
            if time.monotonic() - started > timeout:
                raise DemoError(f"timed out after {timeout:g} s waiting for {what}")
            time.sleep(0.05)
        return time.monotonic() - started

    # -- the steps ----------------------------------------------------------------------

    def setup(self) -> None:
        (self.root / "home").mkdir()
        self.distsync(
            "setup",
            "--storage",
            "local",
            "--bucket",
            str(self.bucket),
            "--output-dir",
            str(self.out),
            "--upload-config",
            str(self.upload_conf),
            "--daemon-config",
            str(self.daemon_conf),
            "--non-interactive",
        )
        values = tomllib.loads(self.daemon_conf.read_text())
        values.update(
            PollInterval=POLL_INTERVAL, PollJitter=0.0, StateDir=str(self.server / "state")
        )
        self.daemon_conf.write_text(tomli_w.dumps(values))
        self.daemon_conf.chmod(0o600)

    def start_daemon(self) -> float:
        with open(self.daemon_log, "wb") as log:
            self.daemon = subprocess.Popen(
                [sys.executable, "-m", "distsync", "daemon", "-c", str(self.daemon_conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,  # a Ctrl-C in the terminal is ours to handle
            )
        return self.wait_for(
            "the daemon to start", START_TIMEOUT, lambda: "watching" in self.log_text()
        )

    def build_tarball(self) -> Path:
        path = self.ci / ARTIFACT
        members = {
            "myapp/VERSION": (b"1.4.2\n", 0o644),
            "myapp/bin/run.sh": (b'#!/bin/sh\nexec python3 -m myapp "$@"\n', 0o755),
            "myapp/config.json": (json.dumps({"workers": 4, "port": 8080}).encode(), 0o644),
            "myapp/static/logo.bin": (os.urandom(256 << 10), 0o644),
        }
        with tarfile.open(path, "w:gz") as tar:
            for name, (data, mode) in members.items():
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), mode, int(time.time())
                tar.addfile(info, io.BytesIO(data))
        path.chmod(0o644)
        return path

    def upload(self, path: Path) -> tuple[str, str]:
        line = self.distsync("upload", "-c", str(self.upload_conf), str(path)).strip()
        match = re.search(r"\tversion (\S+)\t\d+ bytes\tsha256 ([0-9a-f]{64})", line)
        if match is None:
            raise DemoError(f"unexpected output from `distsync upload`: {line!r}")
        return match[1], match[2]

    def stop_daemon(self) -> int | None:
        if self.daemon is None or self.daemon.poll() is not None:
            return None if self.daemon is None else self.daemon.returncode
        self.daemon.send_signal(signal.SIGTERM)
        try:
            return self.daemon.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            self.daemon.wait(timeout=STOP_TIMEOUT)
            raise DemoError(
                f"the daemon did not stop within {STOP_TIMEOUT:g} s of SIGTERM"
            ) from None

    def bucket_report(self, name: str) -> tuple[list[str], bool]:
        """Every key in the bucket with its size, and whether ``name`` appears anywhere."""
        lines, leaked = [], False
        stem = name.split(".")[0].encode()
        for path in sorted(p for p in self.bucket.rglob("*") if p.is_file()):
            key = path.relative_to(self.bucket).as_posix()
            data = path.read_bytes()
            if name in key or stem.decode() in key or name.encode() in data or stem in data:
                leaked = True
            lines.append(f"    {key:<58} {human(len(data)):>10}")
        return lines, leaked


def run(root: Path) -> None:
    demo = Demo(root)
    try:
        print(f"distsync demo in {root}")
        demo.setup()
        print(f"  1. setup (local store): bucket {demo.bucket}")
        print(f"     uploader config {demo.upload_conf}, daemon config {demo.daemon_conf} (0600)")

        started = demo.start_daemon()
        print(
            f"  2. daemon started (pid {demo.daemon.pid if demo.daemon else '?'}, "
            f"polls every {POLL_INTERVAL:g} s, {started:.1f} s to start)"
        )

        tarball = demo.build_tarball()
        source_sha = sha256_of(tarball)
        size = tarball.stat().st_size
        print(f"  3. built {tarball.name} ({human(size)}, 4 files)")

        t0 = time.monotonic()
        version, uploaded_sha = demo.upload(tarball)
        if uploaded_sha != source_sha:
            raise DemoError("`distsync upload` reported another SHA-256 than the file has")
        uploaded = time.monotonic() - t0
        print(f"  4. uploaded as version {version} in {uploaded:.2f} s")

        dest = demo.out / ARTIFACT
        pattern = f"installed {ARTIFACT} version {version} "
        demo.wait_for(
            f"{ARTIFACT} to land in {demo.out}",
            LAND_TIMEOUT,
            lambda: pattern in demo.log_text() and dest.is_file(),
        )
        landed = time.monotonic() - t0
        installed_sha = sha256_of(dest)
        if installed_sha != source_sha:
            raise DemoError(f"{dest} has SHA-256 {installed_sha}, the upload had {source_sha}")
        with tarfile.open(dest) as tar:
            names = tar.getnames()
        print(
            f"  5. installed {dest} (mode {dest.stat().st_mode & 0o777:04o}) "
            f"{landed:.2f} s after the upload started"
        )
        print(f"     sha256 {installed_sha} (matches the source; tarball lists {len(names)} files)")

        keys, leaked = demo.bucket_report(ARTIFACT)
        if leaked:
            raise DemoError(f"the name {ARTIFACT!r} appears in the bucket")
        print(f"  6. the bucket holds {len(keys)} objects (change marker, encrypted manifest log,")
        print("     encrypted content under a random id, the sealed store record):")
        for line in keys:
            print(line)
        print(f"     ({ARTIFACT!r} appears in no key and in no object's bytes)")

        status = demo.stop_daemon()
        if status != 0:
            raise DemoError(f"the daemon exited {status} after SIGTERM, not 0")
        if any(p.name.endswith(".distsync-tmp") for p in demo.out.iterdir()):
            raise DemoError(f"temp files were left in {demo.out}")
        print("  7. daemon stopped cleanly with SIGTERM")
        print("daemon log:")
        for line in demo.log_text().splitlines():
            print(f"    {line}")
    except BaseException:
        log = demo.log_text().strip().splitlines()
        if log:
            print("last lines of the daemon's log:", file=sys.stderr)
            for line in log[-10:]:
                print(f"    {line}", file=sys.stderr)
        raise
    finally:
        if demo.daemon is not None and demo.daemon.poll() is None:
            demo.daemon.terminate()
            try:
                demo.daemon.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                demo.daemon.kill()
                demo.daemon.wait(timeout=STOP_TIMEOUT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # so that the daemon is stopped and the directory removed

    signal.signal(signal.SIGTERM, interrupted)
    root = Path(tempfile.mkdtemp(prefix="distsync-demo-"))
    started = time.monotonic()
    try:
        run(root)
    except DemoError as exc:
        print(f"demo: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return 130
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"demo: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(f"demo: OK in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
