"""Unpacking a release: every format, and one test per kind of hostile archive — refused
whole, with nothing written anywhere (the caller's temp directory stays empty here)."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard
from distsync.release.unpack import ArchiveRejected, archive_kind, fill_release

Member = tuple[tarfile.TarInfo, "bytes | None"]


@pytest.fixture(autouse=True, params=["data filter", "no data filter"])
def tarfile_filter(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test twice: with tarfile's data filter on top, and as on Pythons without it
    (Debian 12's 3.11.2), where the module's own checks and sanitising are all there is."""
    if request.param == "no data filter":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)


def reg(name: str, data: bytes = b"x", mode: int = 0o644) -> Member:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def directory(name: str) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info, None


def device(name: str, kind: bytes = tarfile.CHRTYPE) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = kind, 1, 3
    return info, None


def _mode(member: Member, mode: int) -> Member:
    member[0].mode = mode
    return member


def _owner(member: Member, uid: int) -> Member:
    member[0].uid = member[0].gid = uid
    member[0].uname = member[0].gname = "someone-else"
    return member


def tar_bytes(members: list[Member]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def write_archive(path: Path, members: list[Member]) -> Path:
    raw = tar_bytes(members)
    suffix = path.name.lower()
    if suffix.endswith(".zst"):
        raw = zstandard.ZstdCompressor().compress(raw)
    elif suffix.endswith((".gz", ".tgz")):
        import gzip

        raw = gzip.compress(raw)
    elif suffix.endswith(".xz"):
        import lzma

        raw = lzma.compress(raw)
    elif suffix.endswith(".bz2"):
        import bz2

        raw = bz2.compress(raw)
    path.write_bytes(raw)
    return path


GOOD: list[Member] = [
    directory("./"),
    directory("./bin"),
    reg("./bin/app", b"#!/bin/sh\necho hi\n", 0o755),
    reg("lib/libx.so.1.2", b"elf"),
    link("lib/libx.so.1", "libx.so.1.2"),
    link("lib/libx.so", "libx.so.1"),  # a link to a link
    link("bin/lib", "../lib"),  # inside, through '..'
    _mode(link("bin/app-hard", "bin/app", tarfile.LNKTYPE), 0o755),  # one inode, one mode
    reg("conf/world-writable", b"c", 0o666),
    _owner(reg("conf/owned", b"o"), 4242),
]


FORMATS = ["a.tar", "a.tar.gz", "a.tgz", "a.tar.xz", "a.tar.bz2", "a.tar.zst"]


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_unpacks(tmp_path: Path, name: str) -> None:
    assert archive_kind(name) is not None
    target = tmp_path / "release"
    target.mkdir()
    fill_release(write_archive(tmp_path / name, GOOD), name, target)
    assert (target / "bin" / "app").read_bytes() == b"#!/bin/sh\necho hi\n"
    assert os.stat(target / "bin" / "app").st_mode & 0o777 == 0o755
    assert os.readlink(target / "lib" / "libx.so") == "libx.so.1"
    assert (target / "bin" / "lib" / "libx.so").read_bytes() == b"elf"
    assert os.stat(target / "bin" / "app-hard").st_ino == os.stat(target / "bin" / "app").st_ino
    # No group/other write bits from the archive.
    assert os.stat(target / "conf" / "world-writable").st_mode & 0o022 == 0
    # Owners in the archive are ignored, also when unpacking as root.
    owned = os.stat(target / "conf" / "owned")
    assert (owned.st_uid, owned.st_gid) == (os.geteuid(), os.getegid())


def test_a_non_archive_is_placed_as_one_file(tmp_path: Path) -> None:
    artifact = tmp_path / "tool.bin"
    artifact.write_bytes(b"\x7fELF")
    artifact.chmod(0o750)
    target = tmp_path / "release"
    target.mkdir()
    fill_release(artifact, "tool.bin", target)
    assert [p.name for p in target.iterdir()] == ["tool.bin"]
    assert stat.S_IMODE((target / "tool.bin").stat().st_mode) == 0o750
    # Unpack = false: an archive is kept whole too (a docker save export for `podman load`).
    tar = write_archive(tmp_path / "image.tar", GOOD)
    kept = tmp_path / "kept"
    kept.mkdir()
    fill_release(tar, "image.tar", kept, unpack=False)
    assert (kept / "image.tar").read_bytes() == tar.read_bytes()


HOSTILE: dict[str, tuple[Callable[[Path], list[Member]], str]] = {
    "dotdot": (lambda out: [reg("ok"), reg("../evil")], "'..' component"),
    "dotdot_inside_name": (lambda out: [reg("a/../../evil")], "'..' component"),
    "absolute": (lambda out: [reg(str(out / "abs-evil"))], "is absolute"),
    "symlink_to_etc": (lambda out: [link("etc", "/etc"), reg("etc/distsync-evil")], "absolute"),
    "symlink_climbing": (lambda out: [directory("d"), link("d/up", "../../x")], "leaves"),
    "symlink_to_root": (lambda out: [link("root", ".")], "release directory itself"),
    "write_through_symlink": (
        lambda out: [directory("sub"), link("l", "sub"), reg("l/x")],
        "goes through the link",
    ),
    "symlink_made_later_on_a_link_path": (
        lambda out: [
            directory("a/b/c"),
            directory("d"),
            # Lexically inside; but once s points at a/x, the kernel climbs out of the root.
            link("d/t", "../a/b/c/s/../../.."),
            link("a/b/c/s", "../../x"),
        ],
        "another link's target path",
    ),
    "hard_link_out": (lambda out: [link("h", "/etc/passwd", tarfile.LNKTYPE)], "is absolute"),
    "hard_link_up": (lambda out: [link("h", "../secret", tarfile.LNKTYPE)], "'..' component"),
    "hard_link_to_unknown": (
        lambda out: [link("h", "nothing", tarfile.LNKTYPE)],
        "not an earlier file",
    ),
    "char_device": (lambda out: [device("null")], "is a device"),
    "block_device": (lambda out: [device("sda", tarfile.BLKTYPE)], "is a device"),
    "fifo": (lambda out: [device("pipe", tarfile.FIFOTYPE)], "special file"),
    "setuid": (lambda out: [reg("su", b"x", 0o4755)], "setuid"),
    "setgid_dir": (lambda out: [_mode(directory("g"), 0o2755)], "setgid"),
    "duplicate": (lambda out: [reg("a"), reg("a", b"y")], "appears twice"),
    "file_then_below_it": (lambda out: [reg("f"), reg("f/x")], "below the file"),
    "dir_replaced_by_link": (lambda out: [reg("d/x"), link("d", "e")], "replaces a directory"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused_whole(tmp_path: Path, case: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    make, words = HOSTILE[case]
    archive = write_archive(tmp_path / "evil.tar.gz", make(outside))
    target = outside / "release"
    target.mkdir()
    with pytest.raises(ArchiveRejected, match=words):
        fill_release(archive, "evil.tar.gz", target)
    # The check runs before each member is written: nothing escaped. (The caller deletes
    # the temp directory with whatever earlier, harmless members it holds.)
    assert sorted(p.name for p in outside.iterdir()) == ["release"]
    assert not Path("/etc/distsync-evil").exists()
    assert not (tmp_path / "evil").exists() and not (tmp_path / "secret").exists()


@pytest.mark.parametrize(
    "name,data,words",
    [
        ("bad.tar.gz", b"not gzip at all", "not a valid gz archive"),
        ("bad.tar.xz", b"not xz", "not a valid xz archive"),
        ("bad.tar.bz2", b"not bz2", "not a valid bz2 archive"),
        ("bad.tar.zst", b"not zstd", "not a valid zst archive"),
        ("bad.tar", b"", "empty"),
    ],
)
def test_corrupt_archive_is_refused(tmp_path: Path, name: str, data: bytes, words: str) -> None:
    (tmp_path / name).write_bytes(data)
    target = tmp_path / "release"
    target.mkdir()
    with pytest.raises(ArchiveRejected, match=words):
        fill_release(tmp_path / name, name, target)
