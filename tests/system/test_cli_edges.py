"""The command line's user-visible edges from issue 11, each a real ``distsync`` process.

- An output path is judged by what it is, never by where it is: a regular file under /dev/shm
  (or anywhere under /dev/) is replaced atomically like any regular file.
- A reader that goes away (``distsync list | head -1``) ends every printing command quietly
  with status 141 (128 + SIGPIPE), like other Unix tools: no message, no traceback.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

RunCli = Callable[..., "subprocess.CompletedProcess[bytes]"]
EXIT_CLOSED_OUTPUT = 141


@pytest.fixture
def config(run_cli: RunCli, tmp_path: Path) -> Path:
    """A store made by setup (with its store record: no warning about a missing one)."""
    done = run_cli(
        "setup", "--storage", "local", "--non-interactive", "--bucket", str(tmp_path / "bucket"),
        "--upload-config", str(tmp_path / "distsync.toml"),
        "--daemon-config", str(tmp_path / "distsyncd.toml"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    return tmp_path / "distsync.toml"


@pytest.fixture
def in_dev_shm() -> Iterator[Path]:
    """A path for a regular file in /dev/shm (a tmpfs under /dev), removed afterwards."""
    shm = Path("/dev/shm")
    assert shm.is_dir(), "/dev/shm is part of every Linux system these tests run on"
    path = shm / f"distsync-test-{uuid.uuid4().hex}"
    yield path
    for leftover in shm.glob(f".{path.name}*"):
        leftover.unlink()
    path.unlink(missing_ok=True)


def test_second_encrypt_to_a_file_in_dev_shm_replaces_it_atomically(
    run_cli: RunCli, config: Path, tmp_path: Path, in_dev_shm: Path
) -> None:
    plain = tmp_path / "plain.bin"
    plain.write_bytes(os.urandom(100_000))
    inodes = []
    for _ in range(2):
        done = run_cli("encrypt", "-c", str(config), str(plain), "-o", str(in_dev_shm))
        assert done.returncode == 0, done.stderr.decode()
        inodes.append(os.stat(in_dev_shm).st_ino)
    first_inode = inodes[0]
    st = os.stat(in_dev_shm)
    assert st.st_ino != first_inode  # renamed into place, not written into
    assert stat.S_IMODE(st.st_mode) == 0o600  # like any encrypt output
    # One sealed file, not two appended: it decrypts to the plaintext.
    back = run_cli("decrypt", "-c", str(config), str(in_dev_shm), "-o", "-")
    assert back.returncode == 0, back.stderr.decode()
    assert back.stdout == plain.read_bytes()
    assert list(Path("/dev/shm").glob(f".{in_dev_shm.name}*")) == []  # no temp file left


def test_decrypt_onto_a_longer_file_in_dev_shm_leaves_no_old_bytes(
    run_cli: RunCli, config: Path, tmp_path: Path, in_dev_shm: Path
) -> None:
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"new content")
    sealed = tmp_path / "sealed"
    assert run_cli("encrypt", "-c", str(config), str(plain), "-o", str(sealed)).returncode == 0
    in_dev_shm.write_bytes(b"old content, much longer than the new one " * 100)
    done = run_cli("decrypt", "-c", str(config), str(sealed), "-o", str(in_dev_shm))
    assert done.returncode == 0, done.stderr.decode()
    assert in_dev_shm.read_bytes() == b"new content"


def test_a_symlink_into_dev_shm_replaces_the_file_and_keeps_the_link(
    run_cli: RunCli, config: Path, tmp_path: Path, in_dev_shm: Path
) -> None:
    in_dev_shm.write_bytes(b"stale " * 1000)
    link = tmp_path / "link"
    link.symlink_to(in_dev_shm)
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"fresh")
    sealed = tmp_path / "sealed"
    assert run_cli("encrypt", "-c", str(config), str(plain), "-o", str(sealed)).returncode == 0
    done = run_cli("decrypt", "-c", str(config), str(sealed), "-o", str(link))
    assert done.returncode == 0, done.stderr.decode()
    assert link.is_symlink() and in_dev_shm.read_bytes() == b"fresh"


# -- a reader that goes away -------------------------------------------------------------


def run_with_closed_stdout(
    tmp_path: Path, *args: str, buffered: bool
) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI with standard output a pipe whose reader has already gone; ``buffered``
    is Python's default, else PYTHONUNBUFFERED=1 (every write fails at once)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = dict(os.environ, HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")
    if buffered:
        del env["PYTHONUNBUFFERED"]
    try:
        return subprocess.run(
            [sys.executable, "-m", "distsync", *args],
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)


@pytest.fixture
def stocked(run_cli: RunCli, config: Path, tmp_path: Path) -> Path:
    """A store holding one artifact, and a sealed file: something for every command."""
    source = tmp_path / "app.bin"
    source.write_bytes(b"payload")
    done = run_cli("upload", "-c", str(config), str(source))
    assert done.returncode == 0, done.stderr.decode()
    sealed = run_cli("encrypt", "-c", str(config), str(source), "-o", str(tmp_path / "sealed"))
    assert sealed.returncode == 0, sealed.stderr.decode()
    (tmp_path / "dl").mkdir()
    return source


COMMANDS = {
    "list": ["list", "-c", "{config}"],
    "list --json": ["list", "--json", "-c", "{config}"],
    "upload": ["upload", "-c", "{config}", "{tmp}/app.bin", "--name", "again.bin"],
    "download": ["download", "-c", "{config}", "app.bin", "-o", "{tmp}/dl"],
    "encrypt -o -": ["encrypt", "-c", "{config}", "{tmp}/app.bin", "-o", "-"],
    "decrypt -o -": ["decrypt", "-c", "{config}", "{tmp}/sealed", "-o", "-"],
    "setup": [
        "setup",
        "--storage",
        "local",
        "--non-interactive",
        "--bucket",
        "{tmp}/other-bucket",
        "--upload-config",
        "{tmp}/new-up.toml",
        "--daemon-config",
        "{tmp}/new-d.toml",
    ],
    "--version": ["--version"],
    "--help": ["--help"],
    "list --help": ["list", "--help"],
}


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_closed_stdout_ends_every_printing_command_quietly(
    stocked: Path, config: Path, tmp_path: Path, command: str, buffered: bool
) -> None:
    args = [a.format(config=config, tmp=tmp_path) for a in COMMANDS[command]]
    done = run_with_closed_stdout(tmp_path, *args, buffered=buffered)
    assert done.stderr.decode() == ""  # no "internal error", no "Exception ignored"
    assert done.returncode == EXIT_CLOSED_OUTPUT


def test_list_piped_into_head_exits_quietly(run_cli: RunCli, config: Path, tmp_path: Path) -> None:
    """The issue's own pipeline: far more output than a pipe holds, and ``head -1``."""
    sources = tmp_path / "src"
    sources.mkdir()
    names = []
    for index in range(300):
        path = sources / f"{index:03d}-{'x' * 200}"
        path.write_bytes(b"%d" % index)
        names.append(str(path))
    done = run_cli("upload", "-c", str(config), *names, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    pipeline = subprocess.run(
        [
            "bash",
            "-c",
            'set -o pipefail; "$0" -m distsync list --json -c "$1" | head -1',
            sys.executable,
            str(config),
        ],
        capture_output=True,
        env=dict(os.environ, HOME=str(tmp_path / "home")),
        timeout=120,
        check=False,
    )
    assert pipeline.stdout == b"[\n"
    assert pipeline.stderr.decode() == ""
    assert pipeline.returncode == EXIT_CLOSED_OUTPUT  # distsync's status, through pipefail


def test_a_broken_pipe_that_is_not_stdout_is_still_an_error(
    run_cli: RunCli, config: Path, tmp_path: Path
) -> None:
    """Only standard output's reader going away is quiet: a FIFO output whose reader left
    is a write error, one line, exit 5."""
    import threading

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def read_a_little() -> None:
        with open(fifo, "rb") as handle:
            handle.read(1)

    reader = threading.Thread(target=read_a_little)
    reader.start()
    plain = tmp_path / "big"
    plain.write_bytes(os.urandom(4 << 20))
    done = run_cli("encrypt", "-c", str(config), str(plain), "-o", str(fifo))
    reader.join(30)
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 5 and len(lines) == 1, lines
    assert lines[0] == f"distsync: error: cannot write {fifo}: broken pipe"
