"""The distsync execution and state modules under a real ``salt-call --local``.

A Local store set up by the real CLI; uploads, listings and setups go through Salt's loader
into the engine, and are checked against the store with the engine itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomllib
from conftest import Minion
from distsync.catalog import Catalog
from distsync.config import load_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def _versions(config: Path) -> list[dict[str, Any]]:
    return [v.facts() for v in Catalog.open(load_config(config)).versions()]


def _artifact(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _secret(config: Path) -> str:
    return str(tomllib.loads(config.read_text())["SharedSecret"])


def test_upload_twice_uploads_once(minion: Minion, store: Path, tmp_path: Path) -> None:
    src = _artifact(tmp_path, "app-42.tar.gz", os.urandom(300_000))
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    args = ("distsync.upload", f"src={src}", f"config={store}", "name=app.tar.gz")

    first = minion.call(*args)
    assert first["changed"] is True
    assert (first["name"], first["version"], first["size"]) == ("app.tar.gz", "1", 300_000)
    assert first["sha256"] == digest and first["previous"] is None

    second = minion.call(*args)
    assert second["changed"] is False
    assert (second["version"], second["sha256"]) == ("1", digest)
    assert second["previous"]["version"] == "1"
    assert [v["version"] for v in _versions(store)] == ["1"]


def test_list_newest_first_and_by_name(minion: Minion, store: Path, tmp_path: Path) -> None:
    for name, size in (("a.bin", 10), ("b.bin", 20), ("a.bin", 30)):
        src = _artifact(tmp_path, f"src-{size}", os.urandom(size))
        minion.call("distsync.upload", f"src={src}", f"config={store}", f"name={name}")
    listed = minion.call("distsync.list", f"config={store}")
    assert [(v["name"], v["version"], v["size"]) for v in listed] == [
        ("a.bin", "3", 30),
        ("b.bin", "2", 20),
        ("a.bin", "1", 10),
    ]
    assert listed == [dict(v, pruned=False) for v in _versions(store)]
    assert set(listed[0]) == {
        "name",
        "version",
        "size",
        "sha256",
        "uploaded_at",
        "uploader",
        "mode",
        "pruned",
    }
    only_a = minion.call("distsync.list", "name=a.bin", f"config={store}")
    assert [v["version"] for v in only_a] == ["3", "1"]
    assert minion.call("distsync.list", "name=none.bin", f"config={store}") == []


UPLOADED = """
app.tar.gz:
  distsync.uploaded:
    - src: {src}
    - config: {config}
"""


def test_uploaded_state_test_mode_is_honest(minion: Minion, store: Path, tmp_path: Path) -> None:
    src = _artifact(tmp_path, "build.tar.gz", b"release one\n" * 1000)
    one = hashlib.sha256(src.read_bytes()).hexdigest()
    sls = UPLOADED.format(src=src, config=store)

    rc, results, output = minion.state(sls, "test=True")
    result = results["app.tar.gz"]
    assert rc == 0 and result["result"] is None, output
    assert result["changes"] == {
        "old": None,
        "new": {"version": None, "size": len(src.read_bytes()), "sha256": one},
    }
    assert _versions(store) == [], "test=True uploaded something"

    rc, results, output = minion.state(sls)
    result = results["app.tar.gz"]
    assert rc == 0 and result["result"] is True, output
    assert result["changes"]["new"] == {"version": "1", "size": 12000, "sha256": one}

    rc, results, output = minion.state(sls)
    assert rc == 0 and results["app.tar.gz"]["result"] is True, output
    assert results["app.tar.gz"]["changes"] == {}
    assert "version 1 already has this content" in results["app.tar.gz"]["comment"]

    src.write_bytes(b"release two\n" * 1000)
    two = hashlib.sha256(src.read_bytes()).hexdigest()
    rc, results, output = minion.state(sls, "test=True")
    assert rc == 0 and results["app.tar.gz"]["result"] is None, output
    assert results["app.tar.gz"]["changes"] == {
        "old": {"version": "1", "size": 12000, "sha256": one},
        "new": {"version": None, "size": 12000, "sha256": two},
    }
    assert [v["sha256"] for v in _versions(store)] == [one]
    assert _secret(store) not in output


def test_bad_config_gives_one_clear_line(minion: Minion, store: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(store.read_text().replace("StorageBucket", "StorageBuckett"))
    bad.chmod(0o600)
    src = _artifact(tmp_path, "x.bin", b"x")

    proc = minion.run("distsync.upload", f"src={src}", f"config={bad}")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert f"{bad}: StorageBuckett: unknown key" in output, output
    assert "Traceback" not in output
    assert _secret(store) not in output

    proc = minion.run("distsync.list", f"config={tmp_path / 'missing.toml'}")
    assert proc.returncode != 0
    assert f"{tmp_path / 'missing.toml'}: no such file" in proc.stdout + proc.stderr

    rc, results, output = minion.state(UPLOADED.format(src=src, config=bad))
    assert rc != 0
    result = results["app.tar.gz"]
    assert result["result"] is False and result["changes"] == {}
    assert result["comment"].startswith(f"{bad}: StorageBuckett: unknown key"), result
    assert "\n" not in result["comment"]


def test_missing_source_file_is_one_line(minion: Minion, store: Path, tmp_path: Path) -> None:
    proc = minion.run("distsync.upload", f"src={tmp_path / 'nope.bin'}", f"config={store}")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"cannot read {tmp_path / 'nope.bin'}: no such file or directory" in output, output
    assert "Traceback" not in output


SETUP = """
{upload}:
  distsync.setup:
    - daemon_config: {daemon}
    - storage: local
    - bucket: {bucket}
    - output_dir: {out}
"""


def test_setup_state(minion: Minion, tmp_path: Path) -> None:
    upload, daemon = tmp_path / "cfg" / "distsync", tmp_path / "cfg" / "distsyncd"
    sls = SETUP.format(
        upload=upload, daemon=daemon, bucket=tmp_path / "bucket", out=tmp_path / "out"
    )

    rc, results, output = minion.state(sls, "test=True")
    result = results[str(upload)]
    assert rc == 0 and result["result"] is None, output
    assert result["changes"]["upload_config"] == str(upload)
    assert not upload.exists() and not daemon.exists()

    rc, results, output = minion.state(sls)
    assert rc == 0 and results[str(upload)]["result"] is True, output
    assert results[str(upload)]["changes"]["daemon_config"] == str(daemon)
    for path in (upload, daemon):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = _secret(upload)
    assert secret == _secret(daemon) and secret not in output
    assert str(load_config(daemon).output_dir) == str(tmp_path / "out")

    rc, results, output = minion.state(sls)
    assert rc == 0 and results[str(upload)]["changes"] == {}, output
    assert _secret(upload) == secret

    # The key the servers' TrustedSigners (pillar trusted_signers) must hold.
    again = minion.call(
        "distsync.setup", "storage=local", f"bucket={tmp_path / 'bucket'}",
        f"output_dir={tmp_path / 'out'}", f"upload_config={upload}", f"daemon_config={daemon}",
    )  # fmt: skip
    assert again["changed"] is False
    assert [again["public_key"]] == tomllib.loads(daemon.read_text())["TrustedSigners"]
    assert "SigningKey" not in daemon.read_text()

    # What the uploader config names works for an upload through Salt.
    src = _artifact(tmp_path, "probe.txt", b"probe")
    assert minion.call("distsync.upload", f"src={src}", f"config={upload}")["version"] == "1"

    # Configs that differ from what is asked are refused, never replaced.
    rc, results, output = minion.state(sls.replace(str(tmp_path / "out"), str(tmp_path / "else")))
    assert rc != 0 and results[str(upload)]["result"] is False
    assert "already exists (pass --force" in results[str(upload)]["comment"], output
    assert _secret(upload) == secret

    absent = f"{upload}:\n  distsync.setup_absent:\n    - daemon_config: {daemon}\n"
    rc, results, output = minion.state(absent, "test=True")
    assert rc == 0 and results[str(upload)]["result"] is None and upload.exists(), output
    rc, results, output = minion.state(absent)
    assert rc == 0 and results[str(upload)]["changes"] == {"removed": [str(upload), str(daemon)]}
    assert not upload.exists() and not daemon.exists()


def test_module_loads_only_with_the_engine(minion: Minion, tmp_path: Path) -> None:
    """Salt's Python without the engine: the module is absent and says why."""
    shadow = tmp_path / "shadow"
    (shadow / "distsync").mkdir(parents=True)
    (shadow / "distsync" / "__init__.py").write_text("raise ImportError('no engine here')\n")
    env = dict(minion.env(), PYTHONPATH=str(shadow))
    proc = subprocess.run(
        [
            str(minion.bin / "salt-call"),
            "--local",
            "-c",
            str(minion.conf),
            "--module-dirs",
            str(Path(__file__).resolve().parents[2] / "salt" / "_modules"),
            "distsync.list",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "'distsync' __virtual__ returned False" in output, output
    assert "the engine is not importable (no engine here)" in output, output


ENGINE_ERRORS = """
import importlib.util, sys
from distsync.errors import ConfigError
from salt.exceptions import CommandExecutionError
spec = importlib.util.spec_from_file_location("distsyncmod", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
def fail():
    raise ConfigError("/etc/x.toml", "SharedSecret", "must be 48 characters")
try:
    module._engine(fail)
except CommandExecutionError as exc:
    assert exc.__cause__ is None and exc.__suppress_context__, "the engine's traceback is kept"
    print(type(exc).__name__, exc)
"""


def test_engine_errors_become_command_execution_errors(salt_bin: Path) -> None:
    """salt-call prints any exception's text alike; a master's minion does not, so the
    module turns engine errors into the exception Salt reports as one line."""
    proc = subprocess.run(
        [
            str(salt_bin / "python"),
            "-c",
            ENGINE_ERRORS,
            str(Path(__file__).resolve().parents[2] / "salt" / "_modules" / "distsyncmod.py"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        "CommandExecutionError /etc/x.toml: SharedSecret: must be 48 characters\n"
    )


STATUS_WAIT = """
app.bin:
  distsync.uploaded:
    - src: {src}
    - config: {config}
    - wait: true
    - wait_servers: 2
    - wait_timeout: 3
"""


def test_status_and_wait_with_a_real_daemon(minion: Minion, store: Path, tmp_path: Path) -> None:
    import signal
    import sys
    import time

    import tomli_w
    from distsync.status import read_fleet
    from distsync.storage import open_store

    daemon_conf = store.parent / "distsyncd"
    settings = tomllib.loads(daemon_conf.read_text())
    settings.update(NodeName="salt-node-1", StatusInterval=1, PollInterval=1, PollJitter=0)
    settings["StateDir"] = str(tmp_path / "state")
    daemon_conf.write_text(tomli_w.dumps(settings))
    out_dir = Path(settings["OutputDir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    log = open(tmp_path / "daemon.log", "wb")  # noqa: SIM115 - closed in finally
    daemon = subprocess.Popen(
        [sys.executable, "-m", "distsync", "daemon", "-c", str(daemon_conf)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, HOME=str(tmp_path / "daemon-home")),
        start_new_session=True,
    )
    try:
        cfg = load_config(store)
        deadline = time.monotonic() + 60
        while not read_fleet(cfg, open_store(cfg)).servers:
            assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()
            assert time.monotonic() < deadline, "the daemon never reported"
            time.sleep(0.3)

        src = _artifact(tmp_path, "app-1.bin", os.urandom(50_000))
        out = minion.call(
            "distsync.upload", f"src={src}", f"config={store}", "name=app.bin", "wait=True",
            "wait_timeout=60",
        )  # fmt: skip
        assert out["changed"] is True and out["version"] == "1"
        assert (out["fleet"]["installed"], out["fleet"]["wanted"]) == (1, 1), out["fleet"]
        assert (out_dir / "app.bin").read_bytes() == src.read_bytes()

        shown = minion.call("distsync.status", "name=app.bin", f"config={store}")
        (server,) = shown["servers"]
        assert server["name"] == "salt-node-1" and server["state"] == "live"
        assert server["artifacts"]["app.bin"]["version"] == "1"
        (summary,) = shown["artifacts"]
        assert summary["installed"] == ["salt-node-1"], summary
        assert _secret(store) not in json.dumps(shown)

        # Two servers wanted, one exists: the upload stands, the state fails and says why.
        src.write_bytes(os.urandom(50_000))
        rc, results, output = minion.state(STATUS_WAIT.format(src=src, config=store))
        result = results["app.bin"]
        assert rc != 0 and result["result"] is False, output
        assert result["changes"]["new"]["version"] == "2"
        assert "uploaded as app.bin version 2; then: timed out after 3 s" in result["comment"]
        assert [v["version"] for v in _versions(store)] == ["2", "1"]

        proc = minion.run("distsync.wait_for", "app.bin", "2", f"config={store}", "servers=0")
        assert proc.returncode != 0
        assert "wait_servers must be at least 1" in proc.stdout + proc.stderr

        # status counts the version asked for; a version needs a name and is a version id.
        shown = minion.call("distsync.status", "name=app.bin", "version=1", f"config={store}")
        assert [a["version"] for a in shown["artifacts"]] == ["1"]
        for args in (["version=1"], ["name=app.bin", "version=latest"]):
            proc = minion.run("distsync.status", *args, f"config={store}")
            assert proc.returncode != 0
            assert "version goes with a name, and is a version id" in proc.stderr

        # Bad wait options are refused before anything is uploaded, by the module and the state.
        src.write_bytes(os.urandom(50_000))
        proc = minion.run(
            "distsync.upload", f"src={src}", f"config={store}", "name=app.bin", "wait=True",
            "wait_servers=0",
        )  # fmt: skip
        assert proc.returncode != 0
        assert "wait_servers must be at least 1" in proc.stdout + proc.stderr
        bad_state = STATUS_WAIT.replace("wait_servers: 2", "wait_servers: 0")
        rc, results, output = minion.state(bad_state.format(src=src, config=store))
        assert rc != 0 and results["app.bin"]["result"] is False, output
        assert "wait_servers must be at least 1" in results["app.bin"]["comment"]
        assert [v["version"] for v in _versions(store)] == ["2", "1"]

        # The execution module's failed wait says the upload stands, so a retry is not taken
        # for a first upload.
        proc = minion.run(
            "distsync.upload", f"src={src}", f"config={store}", "name=app.bin", "wait=True",
            "wait_servers=2", "wait_timeout=2",
        )  # fmt: skip
        assert proc.returncode != 0
        assert "uploaded app.bin version 3, then: timed out after 2 s" in proc.stderr
        assert [v["version"] for v in _versions(store)] == ["3", "2", "1"]
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(timeout=10)
        log.close()


KEEP = """
app.bin:
  distsync.uploaded:
    - src: {src}
    - config: {config}
    - keep: 1
"""


def _contents(config: Path) -> list[str]:
    """The versions whose stored content is still in the store, newest first."""
    from distsync.retention import present_objects

    catalog = Catalog.open(load_config(config))
    present = present_objects(catalog)
    assert present is not None
    return [v.version_id for v in catalog.versions() if v.manifest.object_key in present]


def test_keep_prunes_after_the_upload_and_test_deletes_nothing(
    minion: Minion,
    store: Path,
    tmp_path: Path,
    run_cli: Callable[..., subprocess.CompletedProcess[bytes]],
) -> None:
    import tomli_w

    src = _artifact(tmp_path, "app.bin", os.urandom(20_000))
    sls = KEEP.format(src=src, config=store)
    # A first upload still to come: test=True has nothing to prune, and uploads nothing.
    rc, results, output = minion.state(sls, "test=True")
    assert rc == 0 and results["app.bin"]["result"] is None, output
    assert "pruned" not in results["app.bin"]["changes"] and _versions(store) == [], output

    for _ in range(3):
        src.write_bytes(os.urandom(20_000))
        proc = run_cli("upload", "-c", str(store), str(src))
        assert proc.returncode == 0, proc.stderr
    # A server pinned to version 1 reports it in its status record (a --once run).
    daemon_conf = store.parent / "distsyncd"
    settings = tomllib.loads(daemon_conf.read_text())
    settings.update(NodeName="salt-pin-1", Pin={"app.bin": "1"}, StateDir=str(tmp_path / "st"))
    daemon_conf.write_text(tomli_w.dumps(settings))
    proc = run_cli("daemon", "-c", str(daemon_conf), "--once")
    assert proc.returncode == 0, proc.stderr

    # test=True counts the upload still to come among the one kept, and deletes nothing.
    src.write_bytes(os.urandom(20_000))
    out = minion.call(
        "distsync.upload", f"src={src}", f"config={store}", "keep=1", "test=True"
    )  # fmt: skip
    assert out["changed"] is True and out["version"] is None, out
    assert out["pruned"]["deleted"] == [
        {"version": "3", "stored_bytes": out["pruned"]["deleted"][0]["stored_bytes"]},
        {"version": "2", "stored_bytes": out["pruned"]["deleted"][1]["stored_bytes"]},
    ], out["pruned"]
    assert all(d["stored_bytes"] > 20_000 for d in out["pruned"]["deleted"]), out["pruned"]
    (kept,) = out["pruned"]["kept_for_fleet"]
    assert kept["version"] == "1" and "pinned on salt-pin-1" in kept["reason"], kept
    assert _contents(store) == ["3", "2", "1"], "test=True deleted a content"

    rc, results, output = minion.state(sls, "test=True")
    result = results["app.bin"]
    assert rc == 0 and result["result"] is None, output
    assert [d["version"] for d in result["changes"]["pruned"]["deleted"]] == ["3", "2"]
    assert _contents(store) == ["3", "2", "1"], "the state's test=True deleted a content"

    # The real run: one content left (the new one), plus the version the fleet has pinned.
    rc, results, output = minion.state(sls)
    result = results["app.bin"]
    assert rc == 0 and result["result"] is True, output
    assert result["changes"]["new"]["version"] == "4"
    assert [d["version"] for d in result["changes"]["pruned"]["deleted"]] == ["3", "2"]
    assert "pruned version(s) 3, 2; kept version 1: " in result["comment"], result
    assert _contents(store) == ["4", "1"]
    assert [v["version"] for v in _versions(store)] == ["4", "3", "2", "1"]  # entries stay
    listed = minion.call("distsync.list", f"config={store}")
    assert [(v["version"], v["pruned"]) for v in listed] == [
        ("4", False), ("3", True), ("2", True), ("1", False)
    ]

    rc, results, output = minion.state(sls)
    assert rc == 0 and results["app.bin"]["result"] is True, output
    assert results["app.bin"]["changes"] == {}, output

    # keep=0 is refused before anything is uploaded, by the module and the state.
    src.write_bytes(os.urandom(20_000))
    proc = minion.run("distsync.upload", f"src={src}", f"config={store}", "keep=0")
    assert proc.returncode != 0
    assert "keep must be at least 1" in proc.stdout + proc.stderr
    rc, results, output = minion.state(sls.replace("keep: 1", "keep: 0"))
    assert rc != 0 and "keep must be at least 1" in results["app.bin"]["comment"], output
    assert _contents(store) == ["4", "1"] and len(_versions(store)) == 4
    assert _secret(store) not in output
