"""Fixtures of the Salt tests: real ``salt-call --local`` runs against the repository's salt/.

Each test gets a minion of its own (config, cache, pillar and file roots in tmp_path); the
file server serves the repository's salt/ directory, so states, the formula and the custom
modules are the working tree's. Salt comes from its own venv (tests/salt/saltenv.py).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from saltenv import REPO, salt_venv

SALT_DIR = REPO / "salt"


@pytest.fixture(scope="session")
def salt_bin() -> Path:
    return salt_venv() / "bin"


@dataclass
class Minion:
    """A masterless minion: ``call`` runs salt-call --local, ``state`` applies SLS text."""

    root: Path
    bin: Path

    @property
    def conf(self) -> Path:
        return self.root / "conf"

    def env(self) -> dict[str, str]:
        return {
            "PATH": f"{self.bin}:{os.environ['PATH']}",
            "HOME": str(self.root / "home"),
            "LANG": "C.UTF-8",
            # Salt's loader also loads a module's .pyc from salt/_modules/__pycache__ when its
            # source is gone: a renamed module would live on there and shadow the new one.
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        cmd = [
            str(self.bin / "salt-call"),
            "--local",
            "-c",
            str(self.conf),
            "--module-dirs",
            str(SALT_DIR / "_modules"),
            "--states-dir",
            str(SALT_DIR / "_states"),
            "--cachedir",
            str(self.root / "cache"),
            "--retcode-passthrough",
            *args,
        ]
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=self.env(), check=False
        )

    def call(self, *args: str) -> Any:
        """An execution module function that must succeed: its return value."""
        proc = self.run("--out=json", *args)
        assert proc.returncode == 0, (
            f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
        return json.loads(proc.stdout)["local"]

    def state(self, sls_text: str, *args: str) -> tuple[int, dict[str, Any], str]:
        """Apply ``sls_text``: (retcode, state results by state id, raw output)."""
        (self.root / "roots" / "case.sls").write_text(sls_text)
        proc = self.run("--out=json", "state.apply", "case", *args)
        results = json.loads(proc.stdout)["local"] if proc.stdout.strip() else {}
        if isinstance(results, list):  # a rendering error comes as a list of messages
            return proc.returncode, {}, "\n".join(results) + proc.stderr
        by_id = {value["__id__"]: value for value in results.values()}
        return proc.returncode, by_id, proc.stdout + proc.stderr


@pytest.fixture
def minion(tmp_path: Path, salt_bin: Path) -> Minion:
    root = tmp_path / "minion"
    for sub in ("conf", "cache", "roots", "pillar", "home", "log", "pki", "run"):
        (root / sub).mkdir(parents=True)
    config = {
        "id": "distsync-test",
        "file_client": "local",
        "root_dir": str(root),
        "pki_dir": str(root / "pki"),
        "sock_dir": str(root / "run"),
        "log_file": str(root / "log" / "minion"),
        "file_roots": {"base": [str(root / "roots"), str(SALT_DIR)]},
        "pillar_roots": {"base": [str(root / "pillar")]},
        # Grains that ask DNS or probe hardware cost seconds per call and are not used.
        "enable_fqdns_grains": False,
        "enable_gpu_grains": False,
        "grains_cache": True,
    }
    (root / "conf" / "minion").write_text(yaml.safe_dump(config))
    return Minion(root, salt_bin)


@pytest.fixture
def store(tmp_path: Path, run_cli: Callable[..., subprocess.CompletedProcess[bytes]]) -> Path:
    """A Local store set up by the real CLI; returns the uploader's config."""
    setup = tmp_path / "setup"
    run_cli(
        "setup",
        "--non-interactive",
        "--storage",
        "local",
        "--bucket",
        str(setup / "bucket"),
        "--output-dir",
        str(setup / "out"),
        "--upload-config",
        str(setup / "distsync"),
        "--daemon-config",
        str(setup / "distsyncd"),
    )
    return setup / "distsync"
