"""The collection as users get it: built, installed, documented by ansible-doc, and nothing else.

The build is checked against an allow-list of shapes (plugins, roles, playbooks, docs, meta,
changelogs, the engine's source, the ansible-test tests, README/LICENSE/CHANGELOG), from this
checkout and from a copy that holds what the tools leave behind (ansible-lint's nested copy
of the collection, virtualenvs, caches, wheelhouses, Python build output) and configs with a
SharedSecret. The execution-environment metadata is fed to ansible-builder and its own
introspection, the way an image build consumes it.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import tomllib
import yaml
from distsync.crypto.secret import InvalidSecret, parse_secret
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODULES = sorted(p.stem for p in (REPO / "plugins" / "modules").glob("distsync_*.py"))
# Where ansible-builder installs collections inside an image (its constant, in the Containerfile).
EE_COLLECTIONS = "/usr/share/ansible/collections"

# Every file the built collection may hold, as paths from its root. A new kind of content
# (a plugin type, salt/ states) is added here on purpose, not by accident.
SHIPPED = re.compile(
    r"""^(?:
        MANIFEST\.json | FILES\.json | README\.md | LICENSE | CHANGELOG\.(?:md|rst)
      | changelogs/(?:config|changelog)\.yaml | changelogs/fragments/(?:[\w.-]+\.ya?ml|\.keep)
      | docs/[\w.-]+\.(?:md|yml)
      | meta/(?:runtime|execution-environment)\.yml | meta/ee-(?:requirements|bindep)\.txt
      | playbooks/[\w-]+\.yml
      | plugins/(?:modules|module_utils|doc_fragments|filter|lookup|action)/\w+\.py
      | roles/\w+/(?:README\.md | (?:defaults|handlers|meta|tasks|vars)/[\w-]+\.yml
                    | templates/[\w.-]+\.j2 | files/\w+\.py)
      | python/(?:pyproject\.toml | README\.md | distsync/(?:\w+/)*\w+\.py | distsync/py\.typed)
      | salt/(?:[\w-]+/)*[\w.-]+\.(?:sls|jinja|j2|py|md|ya?ml|example)
      | examples/[\w-]+/(?:pyproject\.toml | README\.md | (?:\w+/)*\w+\.py)
      | tests/(?:integration/targets/[\w-]+/(?:aliases|(?:tasks|defaults|vars)/[\w-]+\.yml
                                               |files/[\w.-]+)
               | sanity/ignore-[\d.]+\.txt
               | unit/(?:[\w-]+/)*(?:test_\w+|__init__|conftest)\.py | unit/requirements\.txt)
    )$""",
    re.VERBOSE,
)
PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----")
SECRET_CANDIDATE = re.compile(rb"[A-Za-z0-9_-]{48}")
# The one SharedSecret the collection publishes on purpose: docs/FORMAT*.md's test vectors.
VECTOR_SECRET = bytes(range(32))
# Directories that may ship empty: fragments wait there between releases.
MAY_BE_EMPTY = {"changelogs/fragments"}


def _galaxy(*args: str, cwd: Path | None = None) -> None:
    subprocess.run(
        [str(BIN / "ansible-galaxy"), "collection", *args],
        check=True, capture_output=True, timeout=120, cwd=cwd,
    )


def _build(root: Path, out: Path) -> Path:
    _galaxy("build", str(root), "--output-path", str(out))
    (tarball,) = out.glob("distsync-core-*.tar.gz")
    return tarball


def _problems(tarball: Path) -> list[str]:
    """Everything in the tarball that is not of a shipped shape, or looks like a secret."""
    problems = []
    with tarfile.open(tarball) as tar:
        members = tar.getmembers()
        files = {m.name for m in members if m.isfile()}
        assert files, f"{tarball} is empty"
        links = {m.name for m in members if m.issym()}
        for member in members:
            name = member.name
            if member.isdir():
                # A directory only as the home of shipped files, never an empty husk.
                home = name.rstrip("/")
                homed = files | links
                if home not in MAY_BE_EMPTY and not any(f.startswith(home + "/") for f in homed):
                    problems.append(f"{name}: empty directory")
                continue
            if member.issym():
                # The Salt formula reaches the engine and the role's templates through links;
                # one is fine when it stays inside the collection and names shipped files.
                here = posixpath.dirname(name)
                target = posixpath.normpath(posixpath.join(here, member.linkname))
                if target.startswith("..") or not any(f.startswith(target + "/") for f in files):
                    problems.append(f"{name}: a link to {member.linkname}, outside what ships")
                continue
            if not member.isfile():
                problems.append(f"{name}: not a regular file")
                continue
            if not SHIPPED.match(name):
                problems.append(f"{name}: not a shipped kind of file")
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            if PRIVATE_KEY.search(data):
                problems.append(f"{name}: holds a private key")
            for candidate in SECRET_CANDIDATE.findall(data):
                try:
                    if parse_secret(candidate.decode()) == VECTOR_SECRET:
                        continue
                except InvalidSecret:
                    continue
                problems.append(f"{name}: holds a SharedSecret")
    return problems


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(REPO, tmp_path_factory.mktemp("build"))


@pytest.fixture(scope="module")
def installed(tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("collections")
    _galaxy("install", str(tarball), "-p", str(target))
    return target


def test_this_checkout_builds_only_shipped_files(tarball: Path) -> None:
    assert _problems(tarball) == []


def _tracked_copy(dest: Path) -> None:
    """The files of this checkout that git knows or would add (no ignored ones)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, check=True, capture_output=True, timeout=60,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_symlink():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).symlink_to(os.readlink(source))
        elif source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def test_a_used_checkout_builds_the_same_files(tmp_path: Path, tarball: Path) -> None:
    """After linters, tests, make wheelhouse/release and distsync setup, the build is unchanged."""
    root = tmp_path / "checkout"
    _tracked_copy(root)
    # What the tools leave in a checkout: ansible-lint (through ansible-compat) installs the
    # collection into .ansible/collections; ansible-test writes tests/output; pip and
    # setuptools leave build/, *.egg-info and dist/; make wheelhouse fills build/wheelhouse.
    _galaxy("install", str(tarball), "-p", str(root / ".ansible" / "collections"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / ".venv")],
                   check=True, timeout=120)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(root / "dist"), str(root / "python")],
        check=True, capture_output=True, timeout=300,
    )
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(root / "plugins"),
                    str(root / "python")], check=True, timeout=120)
    for tree in ("tests/output/bot/x.json", ".cache/systemd-rootfs/x/etc/os-release",
                 "build/wheelhouse/cffi-2.1.1-cp313-cp313-manylinux_2_17_x86_64.whl",
                 "python/.mypy_cache/3.11/x.json", ".pytest_cache/v/x", ".ruff_cache/x",
                 ".hypothesis/examples/x", "changelogs/.plugin-cache.yaml",
                 "tests/integration/integration_config.yml", "id_ed25519", "server.pem"):
        (root / tree).parent.mkdir(parents=True, exist_ok=True)
        (root / tree).write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n" if "id_" in tree
                                 or tree.endswith(".pem") else "generated\n")
    # Configs with a real SharedSecret, where `distsync setup` puts them when asked.
    subprocess.run(
        [sys.executable, "-m", "distsync", "setup", "--non-interactive", "--storage", "local",
         "--bucket", str(tmp_path / "bucket"), "--output-dir", str(tmp_path / "out"),
         "--upload-config", str(root / ".distsync"),
         "--daemon-config", str(root / "distsyncd.toml")],
        check=True, capture_output=True, timeout=120, env=dict(os.environ, HOME=str(tmp_path)),
    )
    assert (root / ".ansible/collections/ansible_collections/distsync/core/galaxy.yml").exists() \
        or (root / ".ansible/collections/ansible_collections/distsync/core/MANIFEST.json").exists()
    assert list((root / "python").glob("*.egg-info")) and list((root / "dist").glob("*.whl"))

    used = _build(root, tmp_path / "out")
    assert _problems(used) == []
    with tarfile.open(used) as a, tarfile.open(tarball) as b:
        assert sorted(a.getnames()) == sorted(b.getnames())


def test_build_ships_the_engine_and_its_metadata(installed: Path) -> None:
    root = installed / "ansible_collections" / "distsync" / "core"
    for shipped in ("python/distsync/daemon.py", "python/pyproject.toml", "python/README.md",
                    "meta/execution-environment.yml", "meta/ee-requirements.txt",
                    "meta/ee-bindep.txt", "changelogs/changelog.yaml", "CHANGELOG.md",
                    "roles/daemon/files/wheelhouse.py", "roles/daemon/files/pack_payload.py"):
        assert (root / shipped).is_file(), shipped


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


# -- execution environments ------------------------------------------------------------------


def _ee_requirements() -> list[Requirement]:
    lines = (REPO / "meta" / "ee-requirements.txt").read_text().splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]


def test_ee_requirements_are_the_engines_own() -> None:
    """The engine, then exactly pyproject.toml's dependencies: lower bounds only."""
    engine, *dependencies = _ee_requirements()
    assert engine.name == "distsync"
    assert engine.url == f"file://{EE_COLLECTIONS}/ansible_collections/distsync/core/python"
    project = tomllib.loads((REPO / "python" / "pyproject.toml").read_text())["project"]
    assert sorted(map(str, dependencies)) == sorted(map(str, map(Requirement,
                                                                 project["dependencies"])))
    for requirement in dependencies:
        # Several collections share one image: upper bounds or pins would collide.
        assert all(s.operator == ">=" for s in requirement.specifier), requirement


def test_ansible_builder_context_installs_the_engine(tmp_path: Path, tarball: Path) -> None:
    """ansible-builder create, then its galaxy and introspect steps replayed without a container."""
    work = tmp_path / "ee"
    work.mkdir()
    shutil.copy(REPO / "docs" / "execution-environment.yml", work)
    shutil.copy(tarball, work / "distsync-core.tar.gz")  # as docs/execution-environment.yml says
    context = tmp_path / "context"
    subprocess.run(
        [BIN / "ansible-builder", "create", "-f", work / "execution-environment.yml",
         "-c", context],
        check=True, capture_output=True, timeout=120,
    )
    containerfile = (context / "Containerfile").read_text()
    assert f'--collections-path "{EE_COLLECTIONS}"' in containerfile
    assert "introspect.py introspect" in containerfile
    build = context / "_build"
    assert (build / "distsync-core.tar.gz").is_file()

    # The galaxy stage: install what the context's requirements.yml names, from /build.
    image_root = tmp_path / "image"
    collections = image_root / EE_COLLECTIONS.lstrip("/")
    subprocess.run(
        [BIN / "ansible-galaxy", "collection", "install", "-r", "requirements.yml",
         "--collections-path", collections],
        cwd=build, check=True, capture_output=True, timeout=120,
    )
    # The builder stage: the context's own introspect script over the installed collections.
    written = tmp_path / "requirements.txt"
    subprocess.run(
        [sys.executable, build / "scripts" / "introspect.py", "introspect", collections,
         f"--write-pip={written}", f"--write-bindep={tmp_path / 'bindep.txt'}"],
        check=True, capture_output=True, timeout=120,
    )
    lines = [line.split("  #", 1)[0] for line in written.read_text().splitlines() if line]
    requirements = {Requirement(line).name: Requirement(line) for line in lines}
    assert {"distsync", "cryptography", "boto3", "tomli-w"} <= set(requirements)
    engine_url = requirements["distsync"].url
    assert engine_url is not None and engine_url.startswith(f"file://{EE_COLLECTIONS}/")
    # pip in the image builds the engine from that directory: it must be a complete source.
    engine_dir = image_root / engine_url.removeprefix("file:///")
    assert (engine_dir / "pyproject.toml").is_file()
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", wheels, engine_dir],
        check=True, capture_output=True, timeout=300,
    )
    galaxy_version = yaml.safe_load((REPO / "galaxy.yml").read_text())["version"]
    assert [p.name for p in wheels.glob("*.whl")] == [f"distsync-{galaxy_version}-py3-none-any.whl"]


# -- documents that must agree with the code -----------------------------------------------


def test_ready_is_described_as_the_daemon_sends_it() -> None:
    """READY=1 goes out before the first poll; the unit, the role and the guide all say so."""
    run = (REPO / "python" / "distsync" / "daemon.py").read_text().split("def run(", 1)[1]
    assert run.index('notify("READY=1")') < run.index("_cycle_until_stopped(")
    for path in ("docs/operations.md", "roles/daemon/README.md",
                 "roles/daemon/templates/distsync.service.j2", "README.md"):
        text = " ".join((REPO / path).read_text().split())
        assert "before its first poll" in text, path
        assert not re.search(r"after the first (poll|cycle)", text), path
