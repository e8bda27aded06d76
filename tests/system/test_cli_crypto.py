"""Issue 2's command-line paths, each run as a real ``python -m distsync`` process.

Offline encrypt/decrypt in both formats (files and ``-`` for stdin/stdout), ``--version`` and
``--help``, the config option spellings after the subcommand and the default paths from HOME,
and the failure contract: a tampered, truncated, wrongly keyed or garbage input, a bad config,
an unreadable input or a missing output directory give a non-zero exit status and exactly one
line on stderr, never a traceback, and OUTPUT does not exist afterwards (or is unchanged).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from distsync import __version__
from distsync.crypto.secret import generate_secret
from distsync.crypto.stream import CHUNK_OVERHEAD, HEADER_LEN

RunCli = Callable[..., "subprocess.CompletedProcess[bytes]"]
WriteConfig = Callable[..., Path]

CHUNK = 16384  # the smallest ChunkSize: small test inputs span many chunks
SEALED = CHUNK + CHUNK_OVERHEAD
LAST_PIECE = 1696
PLAIN_SIZE = 6 * CHUNK + LAST_PIECE  # six full chunks and a short final one
CONFIG = f'SharedSecret = "{{secret}}"\nStorageBucket = "bucket"\nChunkSize = {CHUNK}\n'
V3_MAGIC = b"distsync\x03"
LEGACY_MAGIC = b"distsync01"

# Exit statuses documented in README: 2 usage/config, 3 verification, 5 local files.
EXIT_CONFIG = 2
EXIT_INTEGRITY = 3
EXIT_LOCAL_IO = 5


def one_error_line(proc: subprocess.CompletedProcess[bytes]) -> str:
    """The single line a failing command prints; fails the test on anything else."""
    text = proc.stderr.decode("utf-8", "replace")
    assert "Traceback" not in text, text
    assert "internal error" not in text, text
    lines = text.splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr, got {lines!r}"
    assert lines[0].startswith("distsync: error: "), lines[0]
    return lines[0]


def temp_leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".distsync-tmp"))


Sealed = tuple[bytes, bytes, bytes]  # (plaintext sealed, other file same secret, wrong secret)


@dataclass(frozen=True)
class Kit:
    """Made once per module by the real CLI: a config, a plaintext and its sealed forms."""

    config: Path
    secret: str
    plaintext: Path
    sealed: dict[str, Sealed]


def _seal(conf: Path, payload: bytes, fmt: str) -> bytes:
    argv = [sys.executable, "-m", "distsync", "encrypt", "-c", str(conf), "-", "-o", "-"]
    proc = subprocess.run(
        [*argv, "--format", fmt],
        input=payload,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    base = tmp_path_factory.mktemp("kit")
    secret = generate_secret()
    right, wrong = base / "right.toml", base / "wrong.toml"
    right.write_text(CONFIG.replace("{secret}", secret))
    wrong.write_text(CONFIG.replace("{secret}", generate_secret()))
    right.chmod(0o600)
    wrong.chmod(0o600)
    data = os.urandom(PLAIN_SIZE)
    plaintext = base / "plain.bin"
    plaintext.write_bytes(data)
    sealed = {
        fmt: (
            _seal(right, data, fmt),
            _seal(right, os.urandom(PLAIN_SIZE), fmt),
            _seal(wrong, data, fmt),
        )
        for fmt in ("v3", "distsync01")
    }
    return Kit(right, secret, plaintext, sealed)


def encrypt_bytes(run_cli: RunCli, config: Path, data: bytes, fmt: str = "v3") -> bytes:
    proc = run_cli("encrypt", "-c", str(config), "-", "-o", "-", "--format", fmt, stdin=data)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# -- version and help --------------------------------------------------------------------


def test_version(run_cli: RunCli) -> None:
    proc = run_cli("--version")
    assert proc.returncode == 0
    first, *rest = proc.stdout.decode().splitlines()
    assert first == f"distsync {__version__}"
    # Then every installed plugin, the built-ins among them (docs/plugins.md).
    listed = {tuple(line.split()[:3]) for line in rest[1:]}
    assert rest[0] == "plugins:" and {
        ("storage", "Local", "distsync"), ("storage", "S3", "distsync"),
        ("storage", "Swift", "distsync"), ("notify", "S3Poll", "distsync"),
        ("transfer", "BitTorrent", "distsync"),
    } <= listed  # fmt: skip


def test_help_lists_every_command(run_cli: RunCli) -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    text = proc.stdout.decode()
    for command in ("encrypt", "decrypt", "setup", "upload", "list", "download", "daemon"):
        assert command in text
    enc = run_cli("encrypt", "--help")
    assert enc.returncode == 0
    assert b"--format" in enc.stdout and b"distsync01" in enc.stdout
    assert b"-conf" in enc.stdout
    dec = run_cli("decrypt", "--help")
    assert dec.returncode == 0 and b"--output" in dec.stdout


def test_no_command_prints_usage_and_fails(run_cli: RunCli) -> None:
    proc = run_cli()
    assert proc.returncode == 2
    assert b"usage:" in proc.stderr
    assert b"Traceback" not in proc.stderr


# -- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "magic"), [("v3", V3_MAGIC), ("distsync01", LEGACY_MAGIC)])
@pytest.mark.parametrize("size", [0, 1, PLAIN_SIZE])
def test_round_trip_files(
    run_cli: RunCli, kit: Kit, tmp_path: Path, fmt: str, magic: bytes, size: int
) -> None:
    data = os.urandom(size)
    src, enc, dec = tmp_path / "in.bin", tmp_path / "in.enc", tmp_path / "out.bin"
    src.write_bytes(data)
    args = ["encrypt", "-c", str(kit.config), str(src), "-o", str(enc)]
    if fmt != "v3":
        args += ["--format", fmt]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b""
    sealed = enc.read_bytes()
    assert sealed.startswith(magic)
    assert len(sealed) > size
    if size >= 64:
        assert data[:64] not in sealed
    proc = run_cli("decrypt", "-c", str(kit.config), str(enc), "-o", str(dec))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b""
    assert dec.read_bytes() == data
    assert temp_leftovers(tmp_path) == []


def test_v3_is_the_default_with_the_configured_chunk_size(kit: Kit) -> None:
    sealed = kit.sealed["v3"][0]
    assert sealed.startswith(V3_MAGIC)
    # Fixed-size chunks: header, six full sealed chunks, one short final chunk.
    assert len(sealed) == HEADER_LEN + 6 * SEALED + LAST_PIECE + CHUNK_OVERHEAD
    assert kit.sealed["v3"][0] != kit.sealed["v3"][2]  # the secret matters
    assert kit.sealed["distsync01"][0].startswith(LEGACY_MAGIC)


@pytest.mark.parametrize("fmt", ["v3", "distsync01"])
def test_round_trip_stdin_stdout(run_cli: RunCli, kit: Kit, tmp_path: Path, fmt: str) -> None:
    data = kit.plaintext.read_bytes()
    sealed = encrypt_bytes(run_cli, kit.config, data, fmt)
    assert sealed.startswith(V3_MAGIC if fmt == "v3" else LEGACY_MAGIC)
    assert data[:64] not in sealed
    assert sealed != kit.sealed[fmt][0]  # a fresh salt or IV every time
    proc = run_cli("decrypt", "-c", str(kit.config), "-", "-o", "-", stdin=sealed)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == data
    # Mixed: a file in, stdout out; stdin in, a file out.
    enc = tmp_path / "x.enc"
    enc.write_bytes(sealed)
    proc = run_cli("decrypt", "-c", str(kit.config), str(enc), "-o", "-")
    assert proc.returncode == 0 and proc.stdout == data
    out = tmp_path / "x.out"
    proc = run_cli("decrypt", "-c", str(kit.config), "-", "-o", str(out), stdin=sealed)
    assert proc.returncode == 0 and out.read_bytes() == data


def test_encrypt_replaces_an_existing_output(run_cli: RunCli, kit: Kit, tmp_path: Path) -> None:
    out = tmp_path / "out.enc"
    out.write_bytes(b"old contents")
    proc = run_cli("encrypt", "-c", str(kit.config), str(kit.plaintext), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes().startswith(V3_MAGIC)


# -- where the config comes from ---------------------------------------------------------


@pytest.mark.parametrize("flag", ["-c", "--config", "-conf"])
def test_config_option_after_the_subcommand(
    run_cli: RunCli, kit: Kit, tmp_path: Path, flag: str
) -> None:
    enc, dec = tmp_path / "p.enc", tmp_path / "p.out"
    proc = run_cli("encrypt", str(kit.plaintext), flag, str(kit.config), "-o", str(enc))
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("decrypt", flag, str(kit.config), str(enc), "-o", str(dec))
    assert proc.returncode == 0, proc.stderr
    assert dec.read_bytes() == kit.plaintext.read_bytes()


def test_default_config_is_distsync_in_home(
    run_cli: RunCli, write_config: WriteConfig, kit: Kit, tmp_path: Path
) -> None:
    home = tmp_path / "home"  # run_cli's HOME
    home.mkdir()
    enc, dec = tmp_path / "p.enc", tmp_path / "p.out"
    missing = run_cli("encrypt", str(kit.plaintext), "-o", str(enc))
    assert missing.returncode == EXIT_CONFIG
    assert str(home / ".distsync") in one_error_line(missing)
    assert not enc.exists()

    (home / ".distsync").write_text(write_config(CONFIG).read_text())
    (home / ".distsync").chmod(0o600)
    proc = run_cli("encrypt", str(kit.plaintext), "-o", str(enc))
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("decrypt", str(enc), "-o", str(dec))
    assert proc.returncode == 0, proc.stderr
    assert dec.read_bytes() == kit.plaintext.read_bytes()
    # The file in HOME really is the one used: another secret cannot open the result.
    proc = run_cli("decrypt", "-c", str(kit.config), str(enc), "-o", str(tmp_path / "nope"))
    assert proc.returncode == EXIT_INTEGRITY


def test_default_daemon_config_is_distsyncd_in_home(
    run_cli: RunCli, write_config: WriteConfig, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    # An uploader config in ~/.distsync must not be what the daemon picks up.
    (home / ".distsync").write_text(write_config(CONFIG).read_text())
    (home / ".distsync").chmod(0o600)
    proc = run_cli("daemon", "--once", timeout=30)
    assert proc.returncode == EXIT_CONFIG
    assert str(home / ".distsyncd") in one_error_line(proc)


def test_group_readable_config_warns_but_works(
    run_cli: RunCli, write_config: WriteConfig, kit: Kit, tmp_path: Path
) -> None:
    loose = write_config(CONFIG, name="loose.toml", mode=0o644)
    proc = run_cli("encrypt", "-c", str(loose), str(kit.plaintext), "-o", str(tmp_path / "p"))
    assert proc.returncode == 0
    text = proc.stderr.decode()
    assert "WARNING" in text and str(loose) in text and "chmod 600" in text
    proc = run_cli("encrypt", "-c", str(kit.config), str(kit.plaintext), "-o", str(tmp_path / "q"))
    assert proc.returncode == 0 and proc.stderr == b""


def _mangled_secret(secret: str) -> str:
    """Same length, valid alphabet, one data character changed: the CRC no longer matches."""
    return ("A" if secret[0] != "A" else "B") + secret[1:]


def _secret_with_junk(secret: str) -> str:
    """48 characters whose last four are outside base64url (a mangled copy-and-paste)."""
    return secret[:44] + "!!!!"


_BASE = 'SharedSecret = "{secret}"\nStorageBucket = "b"\n'
BAD_CONFIGS: dict[str, tuple[str, str | None]] = {
    # case: (config text, the key the message must name; None when it is about the file)
    "unknown-key": ('SharedSecret = "{secret}"\nStorageBuckett = "b"\n', "StorageBuckett"),
    "missing-secret": ('StorageBucket = "b"\n', "SharedSecret"),
    "short-secret": ('SharedSecret = "abc"\nStorageBucket = "b"\n', "SharedSecret"),
    "bad-crc": ('SharedSecret = "{mangled}"\nStorageBucket = "b"\n', "SharedSecret"),
    "junk-in-secret": ('SharedSecret = "{junk}"\nStorageBucket = "b"\n', "SharedSecret"),
    "missing-bucket": ('SharedSecret = "{secret}"\n', "StorageBucket"),
    "wrong-type": (_BASE + 'PollInterval = "x"\n', "PollInterval"),
    "bad-enum": (_BASE + 'Encrypt = "ROT13"\n', "Encrypt"),
    "bad-chunk-size": (_BASE + "ChunkSize = 1000\n", "ChunkSize"),
    "aws-unknown-key": (_BASE + '[AwsCreds]\nRegoin = "x"\n', "AwsCreds.Regoin"),
    "not-toml": ('SharedSecret = \nStorageBucket = "b"\n', None),
}


# Loading is the same for every command: alternate between the two offline ones.
@pytest.mark.parametrize(
    ("case", "command"),
    [(case, ("encrypt", "decrypt")[i % 2]) for i, case in enumerate(sorted(BAD_CONFIGS))],
)
def test_bad_config_is_one_line_naming_file_and_key(
    run_cli: RunCli,
    write_config: WriteConfig,
    secret_text: str,
    kit: Kit,
    tmp_path: Path,
    case: str,
    command: str,
) -> None:
    text, key = BAD_CONFIGS[case]
    text = text.replace("{mangled}", _mangled_secret(secret_text))
    text = text.replace("{junk}", _secret_with_junk(secret_text))
    bad = write_config(text, name="bad.toml")
    out = tmp_path / "out.bin"
    src = kit.plaintext if command == "encrypt" else tmp_path / "in.enc"
    if command == "decrypt":
        src.write_bytes(kit.sealed["v3"][0])
    proc = run_cli(command, "-c", str(bad), str(src), "-o", str(out))
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    line = one_error_line(proc)
    assert str(bad) in line
    if key is not None:
        assert f": {key}: " in line
    assert secret_text not in line  # secrets never appear in error messages
    assert not out.exists()


def test_missing_and_directory_config(run_cli: RunCli, kit: Kit, tmp_path: Path) -> None:
    for path in (tmp_path / "nope.toml", tmp_path):
        proc = run_cli("encrypt", "-c", str(path), str(kit.plaintext), "-o", str(tmp_path / "o"))
        assert proc.returncode == EXIT_CONFIG
        assert str(path) in one_error_line(proc)
    assert not (tmp_path / "o").exists()


# -- decrypt failures --------------------------------------------------------------------


def _chunks(sealed: bytes) -> tuple[bytes, list[bytes]]:
    body = sealed[HEADER_LEN:]
    return sealed[:HEADER_LEN], [body[i : i + SEALED] for i in range(0, len(body), SEALED)]


def _flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


def _drop(sealed: bytes, index: int) -> bytes:
    head, chunks = _chunks(sealed)
    return head + b"".join(c for i, c in enumerate(chunks) if i != index)


def _dup(sealed: bytes, index: int) -> bytes:
    head, chunks = _chunks(sealed)
    return head + b"".join(chunks[: index + 1] + chunks[index:])


def _swap(sealed: bytes, a: int, b: int) -> bytes:
    head, chunks = _chunks(sealed)
    chunks[a], chunks[b] = chunks[b], chunks[a]
    return head + b"".join(chunks)


def _splice(sealed: bytes, other: bytes, index: int) -> bytes:
    head, chunks = _chunks(sealed)
    chunks[index] = _chunks(other)[1][index]
    return head + b"".join(chunks)


Tamper = Callable[[Sealed], bytes]

V3_TAMPERS: dict[str, Tamper] = {
    "flip-magic": lambda k: _flip(k[0], 2),
    "flip-chunk-size": lambda k: _flip(k[0], 14),
    "flip-salt": lambda k: _flip(k[0], 30),
    "flip-header-tag": lambda k: _flip(k[0], HEADER_LEN - 1),
    "flip-middle-chunk": lambda k: _flip(k[0], HEADER_LEN + 3 * SEALED + 777),
    "flip-last-byte": lambda k: _flip(k[0], len(k[0]) - 1),
    "truncate-in-header": lambda k: k[0][: HEADER_LEN // 2],
    "truncate-after-header": lambda k: k[0][:HEADER_LEN],
    "truncate-at-chunk-boundary": lambda k: k[0][: HEADER_LEN + 3 * SEALED],
    "truncate-before-last-chunk": lambda k: k[0][: HEADER_LEN + 6 * SEALED],
    "truncate-mid-chunk": lambda k: k[0][: HEADER_LEN + 3 * SEALED + 100],
    "drop-chunk": lambda k: _drop(k[0], 2),
    "duplicate-chunk": lambda k: _dup(k[0], 1),
    "reorder-chunks": lambda k: _swap(k[0], 1, 2),
    "splice-other-file": lambda k: _splice(k[0], k[1], 2),
    "header-of-other-file": lambda k: k[1][:HEADER_LEN] + k[0][HEADER_LEN:],
    "trailing-chunk": lambda k: k[0] + _chunks(k[0])[1][0],
    "wrong-secret": lambda k: k[2],
}

LEGACY_TAMPERS: dict[str, Tamper] = {
    "legacy-flip-body": lambda k: _flip(k[0], 200),
    "legacy-flip-frame-length": lambda k: _flip(k[0], 13),
    "legacy-flip-hmac": lambda k: _flip(k[0], len(k[0]) - 1),
    "legacy-truncate-hmac": lambda k: k[0][:-32],
    "legacy-truncate-terminator": lambda k: k[0][:-36],
    "legacy-truncate-mid-frame": lambda k: k[0][:5000],
    "legacy-huge-length": lambda k: LEGACY_MAGIC + b"\xff\xff\xff\xff" + k[0][14:],
    "legacy-too-short-length": lambda k: LEGACY_MAGIC + b"\x00\x00\x00\x05hello" + bytes(36),
    "legacy-wrong-secret": lambda k: k[2],
}

GARBAGE: dict[str, Tamper] = {
    "empty": lambda k: b"",
    "random": lambda k: os.urandom(5000),
    "text": lambda k: b"hello, this is not a distsync object\n",
    "future-version": lambda k: b"distsync\x04" + k[0][9:],
}

ALL_TAMPERS = {**V3_TAMPERS, **LEGACY_TAMPERS, **GARBAGE}


def _tampered(kit: Kit, case: str) -> bytes:
    sealed = kit.sealed["distsync01" if case.startswith("legacy-") else "v3"]
    bad = ALL_TAMPERS[case](sealed)
    assert bad != sealed[0]
    return bad


@pytest.mark.parametrize("case", list(ALL_TAMPERS))
def test_decrypt_rejects_and_writes_nothing(
    run_cli: RunCli, kit: Kit, tmp_path: Path, case: str
) -> None:
    src = tmp_path / "bad.enc"
    src.write_bytes(_tampered(kit, case))
    outdir = tmp_path / "out"
    outdir.mkdir()
    out = outdir / "result.bin"
    proc = run_cli("decrypt", "-c", str(kit.config), str(src), "-o", str(out))
    assert proc.returncode == EXIT_INTEGRITY, proc.stderr
    line = one_error_line(proc)
    assert kit.secret not in line
    assert proc.stdout == b""
    assert not out.exists()
    assert list(outdir.iterdir()) == []  # no temp file left behind either


REPRESENTATIVE = [
    "flip-middle-chunk",
    "truncate-at-chunk-boundary",
    "reorder-chunks",
    "wrong-secret",
    "legacy-flip-body",
    "legacy-truncate-terminator",
    "random",
]


@pytest.mark.parametrize("case", REPRESENTATIVE)
def test_decrypt_failure_leaves_existing_output_unchanged(
    run_cli: RunCli, kit: Kit, tmp_path: Path, case: str
) -> None:
    src = tmp_path / "bad.enc"
    src.write_bytes(_tampered(kit, case))
    out = tmp_path / "result.bin"
    out.write_bytes(b"the previous, good contents\n")
    out.chmod(0o640)
    before = out.stat()
    proc = run_cli("decrypt", "-c", str(kit.config), str(src), "-o", str(out))
    assert proc.returncode == EXIT_INTEGRITY
    one_error_line(proc)
    assert out.read_bytes() == b"the previous, good contents\n"
    after = out.stat()
    assert (after.st_ino, after.st_mode, after.st_mtime_ns) == (
        before.st_ino,
        before.st_mode,
        before.st_mtime_ns,
    )
    assert temp_leftovers(tmp_path) == []


@pytest.mark.parametrize("case", REPRESENTATIVE)
def test_decrypt_failure_from_stdin_to_stdout_prints_nothing(
    run_cli: RunCli, kit: Kit, case: str
) -> None:
    proc = run_cli("decrypt", "-c", str(kit.config), "-", "-o", "-", stdin=_tampered(kit, case))
    assert proc.returncode == EXIT_INTEGRITY
    one_error_line(proc)
    assert proc.stdout == b""  # nothing unverified reaches stdout either


# -- local file problems -----------------------------------------------------------------


@pytest.mark.parametrize("command", ["encrypt", "decrypt"])
def test_missing_input(run_cli: RunCli, kit: Kit, tmp_path: Path, command: str) -> None:
    out = tmp_path / "out"
    out.write_bytes(b"keep me")
    missing = tmp_path / "does-not-exist.bin"
    proc = run_cli(command, "-c", str(kit.config), str(missing), "-o", str(out))
    assert proc.returncode == EXIT_LOCAL_IO
    line = one_error_line(proc)
    assert str(missing) in line and "no such file" in line
    assert out.read_bytes() == b"keep me"


@pytest.mark.parametrize("command", ["encrypt", "decrypt"])
def test_directory_as_input(run_cli: RunCli, kit: Kit, tmp_path: Path, command: str) -> None:
    folder = tmp_path / "a-directory"
    folder.mkdir()
    out = tmp_path / "out"
    proc = run_cli(command, "-c", str(kit.config), str(folder), "-o", str(out))
    assert proc.returncode == EXIT_LOCAL_IO
    assert str(folder) in one_error_line(proc)
    assert not out.exists()


@pytest.mark.parametrize("command", ["encrypt", "decrypt"])
def test_input_that_opens_but_cannot_be_read(
    run_cli: RunCli, kit: Kit, tmp_path: Path, command: str
) -> None:
    """A read error (EIO, like a bad disk or a dropped NFS mount) names the input, not OUTPUT.

    The child's own /proc/self/mem opens fine (also for root) and fails with EIO on the first
    read at offset 0.
    """
    src = "/proc/self/mem"
    out = tmp_path / "out"
    proc = run_cli(command, "-c", str(kit.config), src, "-o", str(out))
    assert proc.returncode == EXIT_LOCAL_IO
    line = one_error_line(proc)
    assert not out.exists()
    assert temp_leftovers(tmp_path) == []
    assert f"cannot read {src}" in line, f"the message blames the wrong file: {line}"


@pytest.mark.parametrize("command", ["encrypt", "decrypt"])
def test_output_into_a_missing_directory(
    run_cli: RunCli, kit: Kit, tmp_path: Path, command: str
) -> None:
    src = kit.plaintext
    if command == "decrypt":
        src = tmp_path / "p.enc"
        src.write_bytes(kit.sealed["v3"][0])
    missing_dir = tmp_path / "no" / "such" / "dir"
    proc = run_cli(command, "-c", str(kit.config), str(src), "-o", str(missing_dir / "out"))
    assert proc.returncode == EXIT_LOCAL_IO
    assert str(missing_dir) in one_error_line(proc)
    assert not (tmp_path / "no").exists()


def test_output_onto_a_directory(run_cli: RunCli, kit: Kit, tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "inside").write_bytes(b"x")
    proc = run_cli("encrypt", "-c", str(kit.config), str(kit.plaintext), "-o", str(target))
    assert proc.returncode == EXIT_LOCAL_IO
    assert str(target) in one_error_line(proc)
    assert target.is_dir() and (target / "inside").read_bytes() == b"x"
    assert temp_leftovers(tmp_path) == []


# -- outputs that cannot be renamed over ---------------------------------------------------


def test_special_outputs_are_written_through_not_replaced(
    run_cli: RunCli, kit: Kit, tmp_path: Path
) -> None:
    """/dev/null stays a device; a FIFO gets the bytes; a symlink keeps pointing at its file."""
    proc = run_cli("encrypt", "-c", str(kit.config), str(kit.plaintext), "-o", "/dev/null")
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert not temp_leftovers(Path("/dev"))

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    proc = run_cli(
        "decrypt", "-c", str(kit.config), "-", "-o", str(fifo), stdin=kit.sealed["v3"][0]
    )
    reader.join(30)
    assert proc.returncode == 0, proc.stderr
    assert received == [kit.plaintext.read_bytes()]

    target = tmp_path / "target.bin"
    link = tmp_path / "link.bin"
    link.symlink_to(target)
    proc = run_cli(
        "decrypt", "-c", str(kit.config), "-", "-o", str(link), stdin=kit.sealed["v3"][0]
    )
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink() and target.read_bytes() == kit.plaintext.read_bytes()
