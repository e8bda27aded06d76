"""Pack what a host needs to install the engine into one reproducible tar (runs on the controller).

    pack_payload.py OUT.tar [--source DIR] [--wheelhouse DIR]

``source/`` holds the engine's source tree (pyproject.toml, README, the distsync package;
never caches or build output), ``wheels/`` the wheelhouse's *.whl files. The same inputs
always give the same bytes (sorted entries, fixed owner and mtime, no compression), so the
role's copy task reports a change exactly when the content changed; one file to copy instead
of one round trip per source file. Prints the tar's SHA-256.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import tarfile
from pathlib import Path

# 2000-01-01: after 1980, which zip (and so wheel building from this tree) needs.
MTIME = 946684800
SKIP_DIRS = {"__pycache__", "build", "dist", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".egg-info")


def source_files(root: Path) -> list[tuple[Path, str]]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if d not in SKIP_DIRS and not d.endswith(SKIP_SUFFIXES)
        )
        for name in sorted(filenames):
            if name.endswith(SKIP_SUFFIXES):
                continue
            path = Path(dirpath) / name
            found.append((path, "source/" + path.relative_to(root).as_posix()))
    return found


def wheel_files(root: Path) -> list[tuple[Path, str]]:
    return [(path, "wheels/" + path.name) for path in sorted(root.glob("*.whl"))]


def add(tar: tarfile.TarFile, path: Path, arcname: str) -> None:
    data = path.read_bytes()
    info = tarfile.TarInfo(arcname)
    info.size = len(data)
    info.mtime = MTIME
    info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    tar.addfile(info, io.BytesIO(data))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--source", type=Path)
    parser.add_argument("--wheelhouse", type=Path)
    args = parser.parse_args()
    members: list[tuple[Path, str]] = []
    if args.source:
        if not (args.source / "pyproject.toml").is_file():
            sys.exit(f"{args.source} is not the engine's source (no pyproject.toml)")
        members += source_files(args.source)
    if args.wheelhouse:
        wheels = wheel_files(args.wheelhouse)
        if not wheels:
            sys.exit(f"{args.wheelhouse} holds no wheels (run `make wheelhouse`)")
        members += wheels
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for path, arcname in sorted(members, key=lambda m: m[1]):
            add(tar, path, arcname)
    data = buffer.getvalue()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, args.out)
    print(hashlib.sha256(data).hexdigest())
    return 0


if __name__ == "__main__":
    sys.exit(main())
