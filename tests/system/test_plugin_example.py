"""An out-of-tree storage plugin gets every guarantee (issue 22, docs/plugins.md).

examples/distsync-hashdir is installed with the engine into a fresh virtualenv, as wheels,
the way a user would (pip, no index: the engine's own dependencies come from this suite's
environment through one .pth line, so nothing is downloaded). Then the real `distsync`
console script of that venv runs `setup`, `upload`, `daemon --once` and meets a tampered
object, with nothing of the plugin inside the engine. The module takes ~10 s alone (up to a
minute with the machine shared), most of it building and installing the two wheels, once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "distsync-hashdir"
_IGNORE = shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__")


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("plugin-venv")
    # Copies, so building the wheels leaves nothing (build/, *.egg-info) in the checkout.
    engine = shutil.copytree(REPO / "python", tmp / "engine", ignore=_IGNORE)
    example = shutil.copytree(EXAMPLE, tmp / "example", ignore=_IGNORE)
    wheels = tmp / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    _run([*pip, "wheel", "--no-deps", "--no-index", "--no-build-isolation", "-w", wheels,
          engine, example])  # fmt: skip
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    # The dependencies (cryptography, boto3, ...) from this environment, after the venv's own
    # packages on sys.path; a plain path line processes none of that directory's .pth files,
    # so this checkout's editable distsync stays out of the venv.
    deps = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    Path(site.strip(), "zz-test-dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")
    _run([*pip, "--python", python, "install", "--no-index", "--no-deps",
          *sorted(wheels.glob("*.whl"))])  # fmt: skip
    where = _run([python, "-c", "import distsync, distsync_hashdir; print(distsync.__file__)"])
    assert where.startswith(str(venv)), f"the venv imports another distsync: {where}"
    return venv


def _run(argv: Sequence[object], **kw: object) -> str:
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=300, check=False, **kw
    )  # type: ignore[call-overload]
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return str(done.stdout)


class Distsync:
    """The venv's `distsync` console script, with its own HOME."""

    def __init__(self, venv: Path, home: Path) -> None:
        self.exe = venv / "bin" / "distsync"
        self.env = dict(os.environ, HOME=str(home))
        self.env.pop("PYTHONPATH", None)  # only what the venv has installed

    def __call__(self, *args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.exe), *map(str, args)],
            capture_output=True, text=True, timeout=120, env=self.env, check=False,
        )  # fmt: skip


def test_a_storage_plugin_installed_beside_the_engine_gets_every_guarantee(
    venv: Path, tmp_path: Path
) -> None:
    distsync = Distsync(venv, tmp_path / "home")
    version = distsync("--version")
    assert version.returncode == 0, version.stderr
    assert "HashDir" in version.stdout and "distsync-hashdir 0.1.0" in version.stdout

    bucket, out = tmp_path / "bucket", tmp_path / "out"
    up, down = tmp_path / "up.toml", tmp_path / "down.toml"
    setup = distsync(
        "setup", "--storage", "hashdir", "--bucket", bucket, "--output-dir", out,
        "--upload-config", up, "--daemon-config", down, "--non-interactive",
    )  # fmt: skip
    assert setup.returncode == 0, setup.stderr
    assert 'Storage = "HashDir"' in up.read_text()
    # The plugin's own layout: every object in a two-hex-digit directory (the record too).
    stored = [p for p in bucket.rglob("*") if p.is_file()]
    assert stored and all(len(p.parent.name) == 2 and p.parent.parent == bucket for p in stored)

    artifact = tmp_path / "app-release.tar.gz"
    first = os.urandom(3 << 20)  # several chunks
    artifact.write_bytes(first)
    upload = distsync("upload", "-c", up, artifact)
    assert upload.returncode == 0, upload.stderr
    daemon = distsync("daemon", "-c", down, "--once")
    assert daemon.returncode == 0, daemon.stderr
    assert (out / artifact.name).read_bytes() == first

    # Names are encrypted: neither the artifact's name nor its content is in the bucket.
    for path in bucket.rglob("*"):
        assert b"app-release" not in path.name.encode()
        if path.is_file():
            assert b"app-release" not in path.read_bytes() and first[:64] not in path.read_bytes()

    # A tampered object is rejected; what was installed stays, and nothing half-written
    # appears in OutputDir.
    before = {p for p in bucket.rglob("*") if p.is_file()}
    artifact.write_bytes(os.urandom(3 << 20))
    assert distsync("upload", "-c", up, artifact).returncode == 0
    new_object = max(({p for p in bucket.rglob("*") if p.is_file()} - before),
                     key=lambda p: p.stat().st_size)  # fmt: skip
    data = bytearray(new_object.read_bytes())
    data[len(data) // 2] ^= 1
    new_object.write_bytes(bytes(data))
    tampered = distsync("daemon", "-c", down, "--once")
    assert tampered.returncode == 1, tampered.stderr
    assert "reject" in tampered.stderr.lower()
    assert "Traceback" not in tampered.stderr
    assert (out / artifact.name).read_bytes() == first
    assert sorted(p.name for p in out.iterdir()) == [artifact.name]


def test_a_plugin_checks_its_own_table_and_a_broken_one_is_one_warning(
    venv: Path, tmp_path: Path
) -> None:
    distsync = Distsync(venv, tmp_path / "home")
    bucket = tmp_path / "bucket"
    up, down = tmp_path / "up.toml", tmp_path / "down.toml"
    setup = distsync(
        "setup", "--storage", "HashDir", "--bucket", bucket, "--output-dir", tmp_path / "out",
        "--upload-config", up, "--daemon-config", down, "--non-interactive",
    )  # fmt: skip
    assert setup.returncode == 0, setup.stderr

    text = up.read_text()
    up.write_text(text + "\n[Plugin.HashDir]\nFanout = 9\n")
    bad = distsync("list", "-c", up)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1, bad.stderr
    assert str(up) in bad.stderr and "Plugin.HashDir.Fanout" in bad.stderr

    # A second plugin distribution whose module does not import: one warning naming it and
    # its error; the working plugin and the engine carry on.
    site = next((venv / "lib").glob("python3*/site-packages"))
    broken = site / "distsync_broken-0.1.dist-info"
    broken.mkdir()
    (broken / "METADATA").write_text("Metadata-Version: 2.1\nName: distsync-broken\nVersion: 0.1\n")
    (broken / "entry_points.txt").write_text(
        "[distsync.storage]\nBroken = distsync_no_such_module:BACKEND\n"
    )
    try:
        up.write_text(text)
        listed = distsync("list", "-c", up)
        assert listed.returncode == 0, listed.stderr
        version = distsync("--version")
        assert version.returncode == 0, version.stderr
        warnings = [line for line in version.stderr.splitlines() if "Broken" in line]
        assert len(warnings) == 1, version.stderr
        assert "distsync-broken" in warnings[0] and "distsync_no_such_module" in warnings[0]
        assert "HashDir" in version.stdout and "Traceback" not in version.stderr
    finally:
        shutil.rmtree(broken)


def test_interactive_setup_of_a_plugin_store_asks_where_it_is_and_nothing_about_aws(
    venv: Path, tmp_path: Path
) -> None:
    import pexpect

    distsync = Distsync(venv, tmp_path / "home")
    child = pexpect.spawn(
        str(distsync.exe),
        ["setup", "--storage", "hashdir", "--upload-config", str(tmp_path / "up.toml"),
         "--daemon-config", str(tmp_path / "down.toml")],
        env=distsync.env, encoding="utf-8", timeout=60,
    )  # fmt: skip
    try:
        assert child.expect_exact(["StorageBucket (where the store is)", "AWS region"]) == 0
        child.sendline(str(tmp_path / "bucket"))
        child.expect_exact("Directory the servers install artifacts into")
        child.sendline(str(tmp_path / "out"))
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before
    assert 'Storage = "HashDir"' in (tmp_path / "up.toml").read_text()
    assert any((tmp_path / "bucket").rglob("*"))
