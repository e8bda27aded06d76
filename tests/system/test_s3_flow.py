"""The real CLI, as separate processes, against a real S3 server (moto in server mode).

Upload, list, download and ``daemon`` run exactly as an operator runs them; the tests look at
the bucket behind their back with a plain boto3 client (and tamper with it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from s3server import ACCESS_KEY, SECRET_KEY, Bucket, MotoServer

MiB = 1 << 20
RunCli = Callable[..., "subprocess.CompletedProcess[bytes]"]

# Shifts time.time() in a child process: installed through PYTHONPATH for that child only.
SITECUSTOMIZE = """\
import os, time
_skew = float(os.environ.get("DISTSYNC_TEST_CLOCK_SKEW") or 0)
if _skew:
    _real_time = time.time
    time.time = lambda: _real_time() + _skew
"""


def config_text(endpoint: str, bucket: str, tmp: Path, *, daemon: bool) -> str:
    lines = [
        'SharedSecret = "{secret}"',
        f'StorageBucket = "{bucket}"',
        'Storage = "S3"',
        "ChunkSize = 65536",
    ]
    if daemon:
        lines += [
            f'OutputDir = "{tmp / "installed"}"',
            f'StateDir = "{tmp / "state"}"',
            "PollInterval = 0.2",
            "PollJitter = 0",
        ]
    lines += [
        "[AwsCreds]",
        'Region = "us-east-1"',
        f'AccessKey = "{ACCESS_KEY}"',
        f'SecretKey = "{SECRET_KEY}"',
        f'Endpoint = "{endpoint}"',
    ]
    return "\n".join(lines) + "\n"


class Fleet:
    """One uploader config and one daemon config sharing a secret, and the CLI to drive them."""

    def __init__(
        self, tmp: Path, endpoint: str, bucket: str, write_config: Callable[..., Path], run: RunCli
    ) -> None:
        self.tmp = tmp
        self.installed = tmp / "installed"
        self.uploader = write_config(config_text(endpoint, bucket, tmp, daemon=False), "up.toml")
        self.daemon = write_config(config_text(endpoint, bucket, tmp, daemon=True), "d.toml")
        self._run = run
        (tmp / "skew").mkdir()
        (tmp / "skew" / "sitecustomize.py").write_text(SITECUSTOMIZE)

    def run(
        self, *args: str, skew: float = 0, timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        env = {"AWS_EC2_METADATA_DISABLED": "true"}
        if skew:
            inherited = os.environ.get("PYTHONPATH")
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.tmp / "skew"), inherited]))
            env["DISTSYNC_TEST_CLOCK_SKEW"] = str(skew)
        return self._run(*args, timeout=timeout, env=env)

    def ok(self, *args: str, skew: float = 0) -> str:
        result = self.run(*args, skew=skew)
        assert result.returncode == 0, result.stderr.decode()
        return result.stdout.decode()

    def upload(self, path: Path, *, name: str | None = None, skew: float = 0) -> str:
        extra = ("--name", name) if name else ()
        return self.ok("upload", "-c", str(self.uploader), *extra, str(path), skew=skew)

    def daemon_once(self) -> subprocess.CompletedProcess[bytes]:
        return self.run("daemon", "--once", "-c", str(self.daemon))


@pytest.fixture
def fleet(
    bucket: Bucket, tmp_path: Path, write_config: Callable[..., Path], run_cli: RunCli
) -> Fleet:
    return Fleet(tmp_path, bucket.endpoint, bucket.name, write_config, run_cli)


def artifact(tmp: Path, name: str, size: int) -> Path:
    path = tmp / "src" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def all_objects(bucket: Bucket) -> Iterator[str]:
    for page in bucket.client.get_paginator("list_objects_v2").paginate(Bucket=bucket.name):
        for item in page.get("Contents", ()):
            yield item["Key"]


def object_keys(bucket: Bucket, under: str) -> set[str]:
    return {key for key in all_objects(bucket) if key.startswith(under)}


def test_upload_list_download_and_install(fleet: Fleet, bucket: Bucket) -> None:
    names = ["frontend-release-7f3a.tar.gz", "worker-image-2b91.docker"]
    big = artifact(fleet.tmp, names[0], 9 * MiB + 5)  # two multipart parts
    small = artifact(fleet.tmp, names[1], 300_000)
    fleet.upload(big)
    fleet.upload(small)
    listing = json.loads(fleet.ok("list", "--json", "-c", str(fleet.uploader)))
    assert sorted(row["name"] for row in listing) == sorted(names)

    out = fleet.tmp / "downloads"
    out.mkdir()
    fleet.ok("download", names[0], "-o", str(out), "-c", str(fleet.uploader))
    assert (out / names[0]).read_bytes() == big.read_bytes()

    result = fleet.daemon_once()
    assert result.returncode == 0, result.stderr.decode()
    assert (fleet.installed / names[0]).read_bytes() == big.read_bytes()
    assert (fleet.installed / names[1]).read_bytes() == small.read_bytes()

    # Names appear nowhere in the bucket: keys, metadata, headers, or (plaintext) bodies.
    keys = list(all_objects(bucket))
    # Two objects, two log entries, the marker, and the daemon's status record.
    assert len(keys) == 6 and sum(key.startswith("distsync/v3/status/") for key in keys) == 1
    for key in keys:
        head = bucket.client.head_object(Bucket=bucket.name, Key=key)
        body = bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read()
        visible = key + json.dumps(head["ResponseMetadata"]["HTTPHeaders"]) + str(head)
        for name in names:
            for form in (name, name.split(".")[0], name.encode().hex()):
                assert form not in visible
            assert name.encode() not in body
        assert not head.get("Metadata")


def test_a_flipped_byte_is_rejected_and_the_previous_install_stays(
    fleet: Fleet, bucket: Bucket
) -> None:
    first = artifact(fleet.tmp, "app.tar.gz", 700_000)
    fleet.upload(first)
    assert fleet.daemon_once().returncode == 0
    installed = fleet.installed / "app.tar.gz"
    assert installed.read_bytes() == first.read_bytes()

    before = object_keys(bucket, "distsync/v3/objects/")
    second = artifact(fleet.tmp, "v2", 700_000)
    fleet.upload(second, name="app.tar.gz")
    (key,) = object_keys(bucket, "distsync/v3/objects/") - before
    stored = bytearray(bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read())
    stored[len(stored) // 2] ^= 0x01
    bucket.client.put_object(Bucket=bucket.name, Key=key, Body=bytes(stored))

    result = fleet.daemon_once()
    log = result.stderr.decode()
    assert result.returncode == 1
    assert "rejected app.tar.gz version 2" in log and "failed authentication" in log
    assert "Traceback" not in log
    assert installed.read_bytes() == first.read_bytes()
    assert sorted(p.name for p in fleet.installed.iterdir()) == ["app.tar.gz"]  # no temp left


def test_uploaders_with_skewed_clocks_miss_nothing_and_upload_order_wins(fleet: Fleet) -> None:
    assert fleet.daemon_once().returncode == 0  # an empty bucket, no marker yet
    ahead, behind = 300.0, -300.0
    a = artifact(fleet.tmp, "a.bin", 1000)
    b = artifact(fleet.tmp, "b.bin", 1000)
    v1 = artifact(fleet.tmp, "v1", 1000)
    v2 = artifact(fleet.tmp, "v2", 1000)
    fleet.upload(a, skew=ahead)
    fleet.upload(v1, name="app", skew=ahead)
    fleet.upload(b, skew=behind)
    fleet.upload(v2, name="app", skew=behind)  # uploaded last, with the oldest clock

    rows = json.loads(fleet.ok("list", "--json", "-c", str(fleet.uploader)))
    stamps = {(row["name"], row["version"]): row["uploaded_at"] for row in rows}
    assert stamps[("app", "2")] - stamps[("app", "4")] > 500  # the skew was real
    assert fleet.daemon_once().returncode == 0
    assert (fleet.installed / "a.bin").read_bytes() == a.read_bytes()
    assert (fleet.installed / "b.bin").read_bytes() == b.read_bytes()
    assert (fleet.installed / "app").read_bytes() == v2.read_bytes()

    c = artifact(fleet.tmp, "c.bin", 1000)
    fleet.upload(c, skew=behind - 60)  # older than everything the daemon has seen
    assert fleet.daemon_once().returncode == 0
    assert (fleet.installed / "c.bin").read_bytes() == c.read_bytes()


def test_keys_from_the_environment_when_the_file_has_none(
    fleet: Fleet, bucket: Bucket, write_config: Callable[..., Path], run_cli: RunCli
) -> None:
    text = config_text(bucket.endpoint, bucket.name, fleet.tmp, daemon=False)
    bare = write_config(
        "\n".join(line for line in text.splitlines() if "Key" not in line), "bare.toml"
    )
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    result = run_cli("list", "-c", str(bare), env=env, timeout=60)
    assert result.returncode == 0, result.stderr.decode()

    half = write_config(text.replace(f'SecretKey = "{SECRET_KEY}"\n', ""), "half.toml")
    result = run_cli("list", "-c", str(half), env=env, timeout=60)
    assert result.returncode == 2
    assert "AccessKey and SecretKey go together" in result.stderr.decode()


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_a_running_daemon_outlives_an_empty_bucket_and_an_outage(
    private_moto: MotoServer,
    tmp_path: Path,
    write_config: Callable[..., Path],
    run_cli: RunCli,
) -> None:
    name = "outage-bucket"
    private_moto.client().create_bucket(Bucket=name)
    fleet = Fleet(tmp_path, private_moto.endpoint, name, write_config, run_cli)
    log_path = tmp_path / "daemon.log"
    env = dict(os.environ, HOME=str(tmp_path / "home"), AWS_EC2_METADATA_DISABLED="true")
    with open(log_path, "wb") as log_file:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "distsync", "daemon", "-c", str(fleet.daemon)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:

        def log() -> str:
            return log_path.read_text(errors="replace")

        wait_for(lambda: "watching S3 bucket" in log(), 30, "the daemon to start")
        time.sleep(1.0)  # several polls of a bucket with no marker at all
        assert daemon.poll() is None, log()

        private_moto.stop()
        wait_for(lambda: "cannot check for new artifacts" in log(), 40, "a warning")
        assert daemon.poll() is None, log()
        assert "endpoint is unreachable" in log() and "Traceback" not in log()

        private_moto.start()  # same port; moto forgets everything, as a fresh store would
        private_moto.client().create_bucket(Bucket=name)
        source = artifact(tmp_path, "after-outage.tar.gz", 200_000)
        fleet.upload(source)
        target = fleet.installed / "after-outage.tar.gz"
        wait_for(target.exists, 40, "the install after the outage")
        assert target.read_bytes() == source.read_bytes()

        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0
        assert "received SIGTERM, stopping" in log() and "Traceback" not in log()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)
