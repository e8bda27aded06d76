"""The formula as users get it: inside the built and installed collection, links intact.

ansible-galaxy keeps a link that points inside the collection as a link, so the installed
salt/distsync/files/role and files/engine still reach the role and the engine's source; a
minion whose file root is the installed salt/ renders the same unit as the working tree.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import Minion
from saltenv import REPO

BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def installed_salt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = tmp_path_factory.mktemp("build")
    subprocess.run(
        [BIN / "ansible-galaxy", "collection", "build", str(REPO), "--output-path", str(build)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (tarball,) = build.glob("distsync-core-*.tar.gz")
    target = tmp_path_factory.mktemp("collections")
    subprocess.run(
        [BIN / "ansible-galaxy", "collection", "install", str(tarball), "-p", str(target)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target / "ansible_collections" / "distsync" / "core" / "salt"


def test_collection_ships_the_formula_with_its_links(installed_salt: Path) -> None:
    for path in ("_modules/distsyncmod.py", "_states/distsyncmod.py", "distsync/init.sls"):
        assert (installed_salt / path).is_file(), path
    role, engine = (
        installed_salt / "distsync" / "files" / "role",
        installed_salt / "distsync" / "files" / "engine",
    )
    assert role.is_symlink() and engine.is_symlink()
    assert (role / "templates" / "distsync.service.j2").is_file()
    assert (engine / "distsync" / "daemon.py").is_file()
    assert not (installed_salt.parent / "tests" / "salt").exists()


def test_installed_formula_renders_the_unit(minion: Minion, installed_salt: Path) -> None:
    config = yaml.safe_load(minion.conf.joinpath("minion").read_text())
    config["file_roots"] = {"base": [str(installed_salt)]}
    minion.conf.joinpath("minion").write_text(yaml.safe_dump(config))
    settings = json.dumps({"shared_secret": "x", "storage_bucket": "/srv/b", "torrent": True})
    proc = minion.run(
        "--out=json", "distsync_formula.render", "distsync.service.j2", settings, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    unit = json.loads(proc.stdout)["local"]
    assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK" in unit
    assert unit.startswith("#\n# Managed by Salt")
