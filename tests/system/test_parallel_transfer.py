"""The parallel pipeline as a user meets it: real ``distsync`` processes, a real S3 server.

What parallel reads and decryption could break, checked from outside: a chunk tampered in the
middle of an object fetched by many workers at once, a store that fails in the workers, and a
stop in the middle of a pipeline. Each ends with one line, the documented exit code, and not a
byte at the destination: no file, no temp file, no part file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from distsync.config import load_config
from distsync.crypto.signing import SigningKey
from distsync.layout import Layout
from distsync.storage import open_store
from distsync.store_record import new_store_record, seal_store_record
from faultproxy import Fault, FaultProxy
from s3server import ACCESS_KEY, SECRET_KEY, Bucket

RunCli = Callable[..., "subprocess.CompletedProcess[bytes]"]
CHUNK = 65536
SEALED = CHUNK + 48
BATCH = (4 << 20) // SEALED  # chunks per ranged read of fetch (63)
SIZE = 5 * BATCH * CHUNK + 1234  # five batches for the fetch workers, and a tail chunk


SIGNING_KEY = SigningKey.generate()


def config(write_config: Callable[..., Path], endpoint: str, bucket: str) -> Path:
    path = write_config(
        'SharedSecret = "{secret}"\n'
        f'StorageBucket = "{bucket}"\nStorage = "S3"\nChunkSize = {CHUNK}\n'
        # Signed, as setup makes a store: no warning about unsigned uploads in stderr.
        f'SigningKey = "{SIGNING_KEY.text()}"\n'
        f'[AwsCreds]\nRegion = "us-east-1"\nAccessKey = "{ACCESS_KEY}"\n'
        f'SecretKey = "{SECRET_KEY}"\nEndpoint = "{endpoint}"\n'
    )
    # A store as setup leaves it: with its record, so commands say nothing about a missing one.
    cfg = load_config(path)
    record = new_store_record(time.time(), {"atomic_create": True})
    open_store(cfg).put(
        Layout(cfg.prefix).store_record, seal_store_record(cfg.secret, Layout(cfg.prefix), record)
    )
    return path


def upload(run_cli: RunCli, conf: Path, tmp_path: Path) -> bytes:
    data = os.urandom(SIZE)
    source = tmp_path / "app.bin"
    source.write_bytes(data)
    proc = run_cli("upload", "-c", str(conf), str(source))
    assert proc.returncode == 0, proc.stderr
    return data


def object_key(bucket: Bucket) -> str:
    listing = bucket.client.list_objects_v2(Bucket=bucket.name, Prefix="distsync/v3/objects/")
    (key,) = [item["Key"] for item in listing["Contents"]]
    return str(key)


def one_line(stderr: bytes) -> str:
    text = stderr.decode()
    assert "Traceback" not in text
    assert text.count("\n") == 1 and text.startswith("distsync: error: "), text
    return text


def nothing_in(directory: Path) -> None:
    assert sorted(p.name for p in directory.iterdir()) == []


@pytest.mark.parametrize("chunk", [0, BATCH + 30, 2 * BATCH, 5 * BATCH])
def test_a_chunk_tampered_mid_object_is_rejected_and_nothing_is_placed(
    bucket: Bucket, write_config: Callable[..., Path], run_cli: RunCli, tmp_path: Path, chunk: int
) -> None:
    conf = config(write_config, bucket.endpoint, bucket.name)
    upload(run_cli, conf, tmp_path)
    key = object_key(bucket)
    body = bytearray(bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read())
    body[64 + chunk * SEALED + 1000] ^= 0x01
    bucket.client.put_object(Bucket=bucket.name, Key=key, Body=bytes(body))
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli("download", "-c", str(conf), "app.bin", "-o", str(out))
    assert proc.returncode == 3, proc.stderr
    assert f"chunk {chunk} failed authentication" in one_line(proc.stderr)
    nothing_in(out)


def test_a_store_failing_in_the_workers_is_one_line_and_leaves_nothing(
    fault_proxy: FaultProxy,
    bucket: Bucket,
    write_config: Callable[..., Path],
    run_cli: RunCli,
    tmp_path: Path,
) -> None:
    upload(run_cli, config(write_config, bucket.endpoint, bucket.name), tmp_path)
    # The header is read first, on the calling thread; the batches are the workers' reads, and
    # from the second one on they all fail (after botocore's retries too).
    fault_proxy.add(
        Fault("status", method="GET", range_from=64 + BATCH * SEALED, status=500, times=10_000)
    )
    proxied = config(write_config, fault_proxy.endpoint, bucket.name)
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli("download", "-c", str(proxied), "app.bin", "-o", str(out))
    assert proc.returncode == 4, proc.stderr
    line = one_line(proc.stderr)
    assert "cannot read distsync/v3/objects/" in line and "InternalError (HTTP 500)" in line
    assert SECRET_KEY not in line
    faults = fault_proxy.counts["status"]
    assert 0 < faults < fault_proxy.counts["GET"]  # the workers' reads failed, not the header
    nothing_in(out)


def test_sigint_in_the_middle_of_a_decryption_leaves_no_temp_file(
    write_config: Callable[..., Path], run_cli: RunCli, tmp_path: Path
) -> None:
    conf = write_config(f'SharedSecret = "{{secret}}"\nStorageBucket = "b"\nChunkSize = {CHUNK}\n')
    sealed = run_cli("encrypt", "-c", str(conf), "-", "-o", "-", stdin=os.urandom(SIZE))
    assert sealed.returncode == 0, sealed.stderr
    out = tmp_path / "out"
    out.mkdir()
    target = str(out / "x")
    command = [sys.executable, "-m", "distsync", "decrypt", "-c", str(conf), "-", "-o", target]
    # SIGINT back to its default before the exec: a suite started in the background of a
    # non-interactive shell (a CI runner's `cmd &`) inherits SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler, rightly: an ignored SIGINT is the caller's choice.
    exec_with_sigint = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", exec_with_sigint, *command],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, HOME=str(tmp_path)),
    )
    assert proc.stdin is not None and proc.stderr is not None
    try:
        # Half the object, then the pipe stays open: the pipeline is mid-way, waiting to read.
        proc.stdin.write(sealed.stdout[: len(sealed.stdout) // 2])
        proc.stdin.flush()
        deadline = time.monotonic() + 60
        while not [p for p in out.iterdir() if p.stat().st_size >= 8 * CHUNK]:
            assert time.monotonic() < deadline, "decryption never started writing"
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.01)
        # Python acts on a signal in the main thread between bytecodes: one that landed just
        # before that thread entered read() would wait for the read to return. So signal once
        # the main thread (the pipeline's reader) sits in read(0, ...), as after a Ctrl-C.
        while not Path(f"/proc/{proc.pid}/syscall").read_text().startswith("0 0x0 "):
            assert time.monotonic() < deadline, "decryption never waited for more input"
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
    assert proc.stderr.read().decode() == "distsync: interrupted\n"
    proc.stderr.close()
    nothing_in(out)
