"""A `docker save` export shipped through distsync and loaded by Debian's podman, with no
container daemon: as a release (loaded before the switch, checked after it), and as a plain
file in OutputDir with an OnUpdate hook. The archive is built here in docker save's own
format (manifest.json, config, layer tar)."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_local_flow import Site

_INSTALL_LOCK = Path("/tmp/distsync-podman-install.lock")


def ensure_podman() -> str:
    """podman from Debian's packages; installed when missing and we are root (as in CI)."""
    found = shutil.which("podman")
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("these tests need podman: apt-get install podman (as root)")
    with open(_INSTALL_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not shutil.which("podman"):
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
            subprocess.run(
                ["apt-get", "install", "-y", "-qq", "podman"],
                check=True,
                env=env,
                timeout=900,
                stdout=subprocess.DEVNULL,
            )
    found = shutil.which("podman")
    assert found, "podman did not install"
    return found


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def docker_save_archive(path: Path, tag: str) -> str:
    """Write a one-layer image in `docker save` format; returns its image id (config digest)."""
    layer = _tar({"hello.txt": f"hello from {tag}\n".encode()})
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/hello.txt"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": "2024-01-01T00:00:00Z"}],
        }
    ).encode()
    image_id = hashlib.sha256(config).hexdigest()
    layer_id = hashlib.sha256(layer).hexdigest()
    repo, version = tag.rsplit(":", 1)
    manifest = [
        {"Config": f"{image_id}.json", "RepoTags": [tag], "Layers": [f"{layer_id}/layer.tar"]}
    ]
    path.write_bytes(
        _tar(
            {
                f"{image_id}.json": config,
                f"{layer_id}/layer.tar": layer,
                f"{layer_id}/VERSION": b"1.0",
                "manifest.json": json.dumps(manifest).encode(),
                "repositories": json.dumps({repo: {version: layer_id}}).encode(),
            }
        )
    )
    return image_id


@pytest.fixture
def podman() -> Iterator[list[str]]:
    """podman with storage of the test's own (vfs: no overlay mounts needed). Its run root
    must be a short path (podman refuses one longer than 50 characters)."""
    storage = Path(tempfile.mkdtemp(prefix="distsync-podman-"))
    argv = [
        ensure_podman(),
        "--root",
        str(storage / "root"),
        "--runroot",
        str(storage / "run"),
        "--storage-driver",
        "vfs",
    ]
    try:
        yield argv
    finally:
        subprocess.run([*argv, "rmi", "--all", "--force"], capture_output=True, timeout=120)
        shutil.rmtree(storage, ignore_errors=True)


def image_id(podman: list[str], tag: str) -> str | None:
    proc = subprocess.run(
        [*podman, "image", "inspect", "--format", "{{.Id}}", tag],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def test_docker_save_export_loads_with_podman(tmp_path: Path, podman: list[str]) -> None:
    site = Site.create(tmp_path)
    try:
        release_tag, plain_tag = "localhost/distsync-release:1", "localhost/distsync-plain:1"
        site.update_daemon_conf(
            # A plain file in OutputDir, loaded by the on-update hook (which needs a shell to
            # read DISTSYNC_PATH).
            OnUpdate=["/bin/sh", "-c", " ".join(podman) + ' load -q -i "$DISTSYNC_PATH"'],
            # A release: the file is kept whole (Unpack = false), loaded before the switch (a
            # failed load means no switch), and the health check asks podman for the image.
            Release=[
                {
                    "Match": "release-image.tar",
                    "Dir": str(tmp_path / "image"),
                    "Unpack": False,
                    "PreActivate": [*podman, "load", "-q", "-i", "release-image.tar"],
                    "HealthCheck": [*podman, "image", "exists", release_tag],
                    "HealthTimeout": 30,
                }
            ],
        )
        builds = tmp_path / "builds"
        builds.mkdir()
        release_id = docker_save_archive(builds / "release-image.tar", release_tag)
        plain_id = docker_save_archive(builds / "plain-image.tar", plain_tag)
        site.upload(builds / "release-image.tar")
        site.upload(builds / "plain-image.tar")
        proc = site.once()
        log = proc.stderr.decode()
        assert proc.returncode == 0, log
        assert "release-image.tar version 1 is current and healthy" in log
        assert "OnUpdate hook /bin/sh ran for plain-image.tar" in log
        assert image_id(podman, release_tag) == release_id
        assert image_id(podman, plain_tag) == plain_id
        current = tmp_path / "image" / "current"
        assert os.readlink(current) == "releases/1-release-image.tar"
        assert (current / "release-image.tar").read_bytes() == (
            builds / "release-image.tar"
        ).read_bytes()
    finally:
        site.close()
