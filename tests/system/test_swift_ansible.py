"""The collection's modules on a real Swift, through a real ``ansible-playbook``.

``distsync_setup`` (``storage: swift``) creates the containers and configs and is idempotent;
``distsync_upload`` and ``distsync_info`` work with the Swift config it wrote; keys never
appear in Ansible's output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from distsync.config import load_config
from swiftserver import ADMIN, READER, SwiftServer

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def collections(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository as ``ansible_collections/distsync/core`` (a symlink: no build)."""
    root = tmp_path_factory.mktemp("collections")
    (root / "ansible_collections" / "distsync").mkdir(parents=True)
    (root / "ansible_collections" / "distsync" / "core").symlink_to(REPO)
    return root


def play(collections: Path, tmp: Path, tasks: list[dict[str, object]]) -> dict[str, object]:
    """Run ``tasks`` (each registers its result under its name); name -> result."""
    names = [str(task["name"]) for task in tasks]
    tasks = [dict(task, register=f"r{n}") for n, task in enumerate(tasks)]
    out = tmp / "results.json"
    collect = "{{ [" + ", ".join(f"r{n}" for n in range(len(names))) + "] | to_json }}"
    tasks.append(
        {"name": "collect", "ansible.builtin.copy": {"content": collect, "dest": str(out)}}
    )
    (tmp / "home").mkdir(exist_ok=True)
    playbook = tmp / "play.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "vars": {"ansible_python_interpreter": sys.executable},
                    "tasks": tasks,
                }
            ]
        )
    )
    env = dict(
        os.environ,
        ANSIBLE_COLLECTIONS_PATH=str(collections),
        ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-tmp"),
        ANSIBLE_NOCOLOR="1",
        HOME=str(tmp / "home"),
    )
    done = subprocess.run(
        [BIN / "ansible-playbook", "-i", "localhost,", str(playbook)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    for secret in (ADMIN.key, READER.key):
        assert secret not in done.stdout and secret not in done.stderr
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return dict(zip(names, json.loads(out.read_text())))


def test_modules_set_up_upload_to_and_list_a_swift_store(
    swift_server: SwiftServer, swift_container: str, collections: Path, tmp_path: Path
) -> None:
    source = tmp_path / "app.tar.gz"
    source.write_bytes(os.urandom(50_000))
    setup = {
        "storage": "swift",
        "bucket": swift_container,
        "auth_url": swift_server.auth_url,
        "username": ADMIN.name,
        "api_key": ADMIN.key,
        "daemon_username": READER.name,
        "daemon_key": READER.key,
        "output_dir": str(tmp_path / "out"),
        "upload_config": str(tmp_path / "up.toml"),
        "daemon_config": str(tmp_path / "d.toml"),
    }
    upload = {"src": str(source), "config": str(tmp_path / "up.toml")}
    results = play(
        collections,
        tmp_path,
        [
            {"name": "setup", "distsync.core.distsync_setup": setup},
            {"name": "setup again", "distsync.core.distsync_setup": setup},
            {"name": "upload", "distsync.core.distsync_upload": upload},
            {"name": "upload again", "distsync.core.distsync_upload": upload},
            {
                "name": "info",
                "distsync.core.distsync_info": {"config": str(tmp_path / "d.toml")},
            },
        ],
    )
    assert results["setup"]["changed"] is True
    assert results["setup again"]["changed"] is False
    assert results["upload"]["changed"] is True and results["upload again"]["changed"] is False
    assert results["info"]["names"] == ["app.tar.gz"]
    daemon = load_config(tmp_path / "d.toml")
    assert daemon.swift is not None and daemon.swift.username == READER.name
    status, _, headers = swift_server.call("HEAD", swift_container + "_daemons")
    assert status == 204 and headers["x-container-write"] == READER.name
