"""Salt for the tests, built by the tests: a venv of its own and a wheelhouse for containers.

Both come from requirements/salt.txt (Salt pinned with the engine's dependencies) and are
cached under .cache/, keyed by that file and this Python, so they are built once per change
of the pins: the venv in about 1.5 min with pip's cache warm (5 min cold), the wheelhouse in
about as long. Salt never goes into the engine's .venv: its pins would move the engine's.
A lock serialises builders (pytest-xdist workers, two suites); a half-built directory is
never taken for a finished one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = ["REPO", "SALT_REQUIREMENTS", "salt_venv", "salt_wheelhouse"]

REPO = Path(__file__).resolve().parents[2]
SALT_REQUIREMENTS = REPO / "requirements" / "salt.txt"
CACHE = REPO / ".cache"
PIP = ["-m", "pip", "--disable-pip-version-check", "--quiet"]


def _key(*extra: str) -> str:
    digest = hashlib.sha256(SALT_REQUIREMENTS.read_bytes())
    digest.update(f"{sys.version_info[:2]} {' '.join(extra)}".encode())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(cmd: list[object], timeout: float) -> None:
    proc = subprocess.run(
        [str(part) for part in cmd], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, cmd))} exited {proc.returncode}\n{proc.stdout[-3000:]}"
            f"\n{proc.stderr[-3000:]}"
        )


def _base_python() -> str:
    """The interpreter this venv (or the one we run in) was made from."""
    return getattr(sys, "_base_executable", None) or sys.executable


def salt_venv() -> Path:
    """A venv with Salt and the engine (editable: the working tree's python/)."""
    venv = CACHE / "salt-venv" / _key("venv")
    done = venv / ".distsync-complete"
    with _locked(venv.with_name(f".lock-{venv.name}")):
        if not done.exists():
            # A venv cannot be moved once made (its scripts name their interpreter by
            # path): built in place, and marked complete only at the end.
            shutil.rmtree(venv, ignore_errors=True)
            try:
                _run([_base_python(), "-m", "venv", venv], timeout=300)
                python = venv / "bin" / "python"
                _run([python, *PIP, "install", "-r", SALT_REQUIREMENTS], timeout=1800)
                done.touch()
            except BaseException:
                shutil.rmtree(venv, ignore_errors=True)
                raise
        # Cheap, and keeps the engine's entry in the venv pointing at this working tree.
        python = venv / "bin" / "python"
        probe = subprocess.run(
            [python, "-c", "import distsync, sys; print(distsync.__file__)"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode != 0 or not probe.stdout.startswith(str(REPO / "python")):
            _run(
                [
                    python,
                    *PIP,
                    "install",
                    "--no-deps",
                    "--no-build-isolation",
                    "-e",
                    REPO / "python",
                ],
                timeout=600,
            )
        # The engine is installed without its dependencies (its pins are Salt's lock's):
        # a dependency the engine gains must reach requirements/salt.txt, or this fails.
        _run([python, *PIP, "check"], timeout=120)
    return venv


def salt_wheelhouse() -> Path:
    """Wheels of Salt and its dependencies, for this Python (containers install offline)."""
    wheels = CACHE / "salt-wheelhouse" / _key("wheels")
    with _locked(wheels.with_name(f".lock-{wheels.name}")):
        if (wheels / ".distsync-complete").exists():
            return wheels
        building = wheels.with_name(f"{wheels.name}.tmp{os.getpid()}")
        shutil.rmtree(building, ignore_errors=True)
        try:
            _run(
                [sys.executable, *PIP, "wheel", "--wheel-dir", building, "-r", SALT_REQUIREMENTS],
                timeout=1800,
            )
            (building / ".distsync-complete").touch()
            shutil.rmtree(wheels, ignore_errors=True)
            building.rename(wheels)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
    return wheels
