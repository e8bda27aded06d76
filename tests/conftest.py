"""Shared fixtures: a SharedSecret, config files, and running the real CLI as a subprocess."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from distsync.crypto.secret import generate_secret

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def secret_text() -> str:
    return generate_secret()


@pytest.fixture
def write_config(tmp_path: Path, secret_text: str) -> Callable[..., Path]:
    """Write a config file (0600) from TOML text; ``{secret}`` is replaced by a fresh secret."""

    def write(
        text: str | None = None, name: str = "distsync.toml", mode: int = 0o600
    ) -> Path:
        if text is None:
            text = 'SharedSecret = "{secret}"\nStorageBucket = "bucket"\n'
        path = tmp_path / name
        path.write_text(text.replace("{secret}", secret_text))
        path.chmod(mode)
        return path

    return write


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[bytes]]:
    """Run ``python -m distsync ARGS`` as a real process; HOME points into tmp_path.

    ``memory_limit`` caps the process's address space (RLIMIT_AS, bytes): a test of a guard
    against unbounded reads then fails fast with MemoryError where the guard is missing,
    instead of exhausting the machine's memory.
    """

    def run(
        *args: str,
        stdin: bytes | None = None,
        timeout: float = 120,
        memory_limit: int | None = None,
        **kw: object,
    ) -> subprocess.CompletedProcess[bytes]:
        env = dict(os.environ, HOME=str(tmp_path / "home"))
        env.update({k: str(v) for k, v in kw.pop("env", {}).items()})  # type: ignore[attr-defined]

        def cap_memory() -> None:
            if memory_limit is not None:
                resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

        return subprocess.run(
            [sys.executable, "-m", "distsync", *args],
            input=stdin,
            capture_output=True,
            timeout=timeout,
            env=env,
            check=False,
            preexec_fn=cap_memory if memory_limit is not None else None,
        )

    return run
