"""The collection as users get it: built, installed, and documented by ansible-doc."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODULES = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("distsync_*.py"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = tmp_path_factory.mktemp("build")
    subprocess.run(
        [BIN / "ansible-galaxy", "collection", "build", str(REPO), "--output-path", str(build)],
        check=True, capture_output=True, timeout=120,
    )
    (tarball,) = build.glob("distsync-core-*.tar.gz")
    target = tmp_path_factory.mktemp("collections")
    subprocess.run(
        [BIN / "ansible-galaxy", "collection", "install", str(tarball), "-p", str(target)],
        check=True, capture_output=True, timeout=120,
    )
    return target


def test_build_ships_the_engine_but_not_dev_trees(installed: Path) -> None:
    root = installed / "ansible_collections" / "distsync" / "core"
    assert (root / "python" / "distsync" / "daemon.py").is_file()
    assert (root / "python" / "pyproject.toml").is_file()
    for dev_only in ("bench", "scripts", "tests/system", "tests/engine", ".venv", ".cache"):
        assert not (root / dev_only).exists(), dev_only


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_renders(installed: Path, module: str) -> None:
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(installed))
    done = subprocess.run(
        [BIN / "ansible-doc", "--json", f"distsync.core.{module}"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)[f"distsync.core.{module}"]["doc"]
    assert doc["short_description"]
    assert {"check_mode", "diff_mode", "idempotent"} <= set(doc["attributes"])
    assert any("distsync" in req for req in doc["requirements"])
    text = subprocess.run(
        [BIN / "ansible-doc", f"distsync.core.{module}"],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    assert "EXAMPLES" in text and "RETURN VALUES" in text
