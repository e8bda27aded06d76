"""``distsync setup`` at its edges (issue 11), as a real process.

- On a terminal (a real pseudo-terminal, driven with pexpect), every answer is checked when it
  is given and the question asked again, in the question's terms: never a message about a flag
  the user did not type, after the last prompt.
- ``--storage s3 --endpoint URL`` against a store that has no IAM or STS (real S3-only servers:
  localbucket, and ministack serving S3 alone or S3 and STS) says what is missing and what to
  do instead, in one line.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

# tests/system is on sys.path (pytest's default "prepend" import mode, no __init__.py).
from iamserver import ROOT, IamServer
from s3server import free_port

REPO = Path(__file__).resolve().parents[2]


def clean_env(home: Path, *, keys: bool) -> dict[str, str]:
    """No AWS settings but ``ROOT``'s keys (with ``keys``); HOME inside the test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        HOME=str(home),
        AWS_CONFIG_FILE=str(home / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    if keys:
        env.update(
            AWS_ACCESS_KEY_ID=ROOT.access_key_id, AWS_SECRET_ACCESS_KEY=ROOT.secret_access_key
        )
    home.mkdir(parents=True, exist_ok=True)
    return env


# -- prompts on a terminal -----------------------------------------------------------------


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[list[pexpect.spawn]]:
    """Setup processes on pseudo-terminals, killed at the end whatever happened."""
    children: list[pexpect.spawn] = []
    yield children
    for child in children:
        if child.isalive():
            child.terminate(force=True)


def spawn_setup(children: list[pexpect.spawn], tmp_path: Path) -> pexpect.spawn:
    child = pexpect.spawn(
        sys.executable,
        [
            "-m",
            "distsync",
            "setup",
            "--upload-config",
            str(tmp_path / "up.toml"),
            "--daemon-config",
            str(tmp_path / "d.toml"),
        ],
        env=clean_env(tmp_path / "home", keys=False),
        encoding="utf-8",
        timeout=60,
        dimensions=(24, 250),
    )
    children.append(child)
    return child


def expect_first(child: pexpect.spawn, wanted: str, instead: str) -> None:
    """``wanted`` shows before ``instead`` (the next question, had the answer been taken)."""
    index = child.expect_exact([wanted, instead])
    assert index == 0, f"{instead!r} came where {wanted!r} should:\n{child.before}{child.after}"


def finish(child: pexpect.spawn) -> tuple[int, str]:
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus, child.before


STORAGE = "Storage (local, s3 or swift) [local]: "
BUCKET_DIR = "Directory that plays the bucket ["
OUTPUT_DIR = "Directory the servers install artifacts into ["


def test_wrong_answers_on_a_local_setup_are_asked_again_at_once(
    terminal: list[pexpect.spawn], tmp_path: Path
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    child = spawn_setup(terminal, tmp_path)
    child.expect_exact(STORAGE)
    child.sendline("s4")
    expect_first(
        child,
        "'s4' is not a storage: answer local, s3, s3+bittorrent, swift or swift+bittorrent",
        "AWS region",
    )
    child.expect_exact(STORAGE)
    child.sendline("local")
    child.expect_exact(BUCKET_DIR)
    child.sendline(str(a_file))
    expect_first(child, f"{a_file} exists and is not a directory", OUTPUT_DIR)
    child.expect_exact(BUCKET_DIR)
    child.sendline(str(tmp_path / "bucket"))
    child.expect_exact(OUTPUT_DIR)
    child.sendline(str(a_file / "sub"))
    expect_first(child, f"cannot be made: {a_file} is not a directory", "wrote ")
    child.expect_exact(OUTPUT_DIR)
    child.sendline(str(tmp_path / "out"))
    status, rest = finish(child)
    assert status == 0, rest
    assert "wrote " in rest
    daemon_config = (tmp_path / "d.toml").read_text()
    assert f'StorageBucket = "{tmp_path / "bucket"}"' in daemon_config
    assert f'OutputDir = "{tmp_path / "out"}"' in daemon_config


def test_wrong_answers_on_an_s3_setup_are_asked_again_at_once(
    terminal: list[pexpect.spawn], tmp_path: Path
) -> None:
    child = spawn_setup(terminal, tmp_path)
    child.expect_exact(STORAGE)
    child.sendline("S3")
    child.expect_exact("AWS region [us-east-1]: ")
    child.sendline("moon")
    expect_first(child, "'moon' is not an AWS region name", "S3 endpoint URL")
    child.expect_exact("AWS region [us-east-1]: ")
    child.sendline("eu-west-3")
    child.expect_exact("S3 endpoint URL (empty for AWS) []: ")
    child.sendline("ftp://example.com")
    expect_first(child, "'ftp://example.com' is not an http:// or https:// URL", "Setup id [")
    child.expect_exact("S3 endpoint URL (empty for AWS) []: ")
    child.sendline("")
    child.expect_exact("Setup id [")
    child.sendline("Bad_Id")
    expect_first(child, "setup id 'Bad_Id' must be 1-40 lower-case letters", OUTPUT_DIR)
    child.expect_exact("Setup id [")
    child.sendline("good-id")
    child.expect_exact(OUTPUT_DIR)
    child.sendline(str(tmp_path / "out"))
    # Every answer taken; setup itself then needs AWS credentials, which this test has none of.
    status, rest = finish(child)
    assert status == 2
    assert rest.strip().splitlines()[-1].startswith("distsync: error: no AWS credentials")


def test_existing_configs_stop_a_local_setup_before_more_questions(
    terminal: list[pexpect.spawn], tmp_path: Path
) -> None:
    (tmp_path / "up.toml").write_text("# someone's config\n")
    child = spawn_setup(terminal, tmp_path)
    child.expect_exact(STORAGE)
    child.sendline("")  # local
    expect_first(child, "already exists (pass --force to replace it)", BUCKET_DIR)
    status, _rest = finish(child)
    assert status == 2
    assert (tmp_path / "up.toml").read_text() == "# someone's config\n"


def test_end_of_input_at_a_prompt_cancels_setup_in_one_line(
    terminal: list[pexpect.spawn], tmp_path: Path
) -> None:
    child = spawn_setup(terminal, tmp_path)
    child.expect_exact(STORAGE)
    child.sendeof()
    status, rest = finish(child)
    assert status == 2, rest
    assert "internal error" not in rest and "Traceback" not in rest, rest
    assert "distsync: error: setup cancelled: no answer to 'Storage (local, s3 or swift)'" in rest
    assert not (tmp_path / "up.toml").exists()


# -- a store without IAM --------------------------------------------------------------------


@contextlib.contextmanager
def localbucket(workdir: Path) -> Iterator[str]:
    """localbucket (PyPI): S3 alone, files on disk, credentials not checked."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with open(workdir / "localbucket.log", "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "localbucket",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                str(workdir / "data"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (workdir / "localbucket.log").read_text()
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/")
                conn.getresponse().read()
                conn.close()
                break
            assert time.monotonic() < deadline, "localbucket did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextlib.contextmanager
def ministack(workdir: Path, services: str) -> Iterator[str]:
    with IamServer(workdir, services=services) as server:
        yield server.endpoint


S3_ONLY_STORES = {
    # name: (server, what it answers, the API it answers that to)
    "localbucket": (localbucket, "HTTP 501", "sts:GetCallerIdentity"),
    "ministack-s3": (
        lambda workdir: ministack(workdir, "s3"),
        "something that is not an STS response",
        "sts:GetCallerIdentity",
    ),
    "ministack-s3-sts": (
        lambda workdir: ministack(workdir, "s3,sts"),
        "something that is not an IAM response",
        "iam:GetUser",
    ),
}


def run_setup_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "distsync", "setup", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(home, keys=True),
        check=False,
    )


@pytest.mark.parametrize("store", list(S3_ONLY_STORES))
def test_setup_against_a_store_without_iam_says_what_is_missing(tmp_path: Path, store: str) -> None:
    server, answered, api = S3_ONLY_STORES[store]
    with server(tmp_path / "server") as endpoint:
        done = run_setup_cli(
            tmp_path / "home",
            "--storage",
            "s3",
            "--non-interactive",
            "--endpoint",
            endpoint,
            "--upload-config",
            str(tmp_path / "up.toml"),
            "--daemon-config",
            str(tmp_path / "d.toml"),
        )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    service = api.partition(":")[0].upper()
    assert lines[0].startswith(
        f"distsync: error: the endpoint {endpoint} answered {answered} to {api}: "
        f"it offers no {service}, which setup needs to create the uploader's and the daemon's "
        "identities;"
    ), lines[0]
    assert '"Stores without IAM" in docs/setup-s3.md' in lines[0]
    assert "--storage local" in lines[0]
    assert not (tmp_path / "up.toml").exists() and not (tmp_path / "d.toml").exists()
    # The page the message points to exists.
    assert "\n## Stores without IAM\n" in (REPO / "docs" / "setup-s3.md").read_text()


def test_a_malformed_endpoint_is_one_line_not_an_internal_error(tmp_path: Path) -> None:
    done = run_setup_cli(
        tmp_path / "home",
        "--storage",
        "s3",
        "--non-interactive",
        "--endpoint",
        "localhost:9000",
        "--upload-config",
        str(tmp_path / "up.toml"),
        "--daemon-config",
        str(tmp_path / "d.toml"),
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        "distsync: error: endpoint 'localhost:9000' is not an http:// or https:// URL "
        "(like http://127.0.0.1:9000)\n"
    )
