"""The Salt formula on real systemd: masterless ``salt-call`` inside systemd-nspawn containers.

Two containers of the daemon role's test root (tests/systemd/rootfs.sh), on a private
network like test_fleet.py's: Salt is installed in each from a wheelhouse built on the host
(tests/salt/saltenv.py; the containers have no route out), the collection is bind-mounted
read-only and its salt/ directory is the file root, so the formula, its link to the role's
templates and the custom modules are the working tree's. s1 installs the engine from a
wheelhouse served by the file server, s2 from the collection's source (files/engine) with
the same wheelhouse as its only index. The store is ``Storage = "Local"``, a host
directory bound into both, written by uploads on the host.

Needs root, systemd-nspawn, debootstrap and iproute2 (tests/systemd/run.sh installs them).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import secrets
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tomllib
import yaml
from harness import REPO, Container, Fleet, sh, wait_for

sys.path.insert(0, str(REPO / "tests" / "salt"))
from saltenv import salt_wheelhouse

HERE = Path(__file__).resolve().parent
UNIT = "distsync.service"
UNIT_FILE = "/etc/systemd/system/distsync.service"
OUTPUT_DIR = "/srv/distsync"
BUCKET = "/srv/distsync-bucket"
COLLECTION = "/srv/collection"
SALT_WHEELS = "/srv/salt-wheels"
EXTRA_ROOT = "/srv/salt-extra"
SALT_CALL = "/opt/salt/bin/salt-call"
SETTINGS: dict[str, Any] = {
    "storage": "Local",
    "storage_bucket": BUCKET,
    "output_dir": OUTPUT_DIR,
    "poll_interval": 1,
    "poll_jitter": 0.5,
    "watchdog_sec": "10s",
    "timeout_start_sec": "2min",
    "wheelhouse": "salt://distsync-wheels",
    # A release directory the unit must be able to write (it does not start otherwise).
    "releases": [{"match": "site-*.tar.gz", "dir": "/srv/site"}],
}
INSTALL = {"s1": "wheelhouse", "s2": "source"}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, systemd-nspawn)"
    for tool in ("systemd-nspawn", "debootstrap", "ip", "nsenter", "setpriv", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"needs {tool} (tests/systemd/run.sh installs it)"
    return None


if (_reason := _missing()) is not None:
    if os.environ.get("DISTSYNC_SYSTEMD_REQUIRED") == "1":
        raise RuntimeError(_reason)
    pytest.skip(_reason, allow_module_level=True)


@dataclass
class Apply:
    rc: int
    results: dict[str, dict[str, Any]]
    output: str

    def changed(self) -> dict[str, Any]:
        return {key: r["changes"] for key, r in self.results.items() if r["changes"]}

    def failed(self) -> dict[str, str]:
        return {key: r["comment"] for key, r in self.results.items() if r["result"] is False}


@dataclass
class SaltSite:
    fleet: Fleet
    secret: str
    upload_config: Path
    bucket: Path
    first: dict[str, Apply] = field(default_factory=dict)
    fresh_check: dict[str, Apply] = field(default_factory=dict)

    @property
    def containers(self) -> list[Container]:
        return list(self.fleet.containers.values())

    def pillar(self, container: Container, **extra: Any) -> None:
        settings = {
            **SETTINGS,
            "shared_secret": self.secret,
            "install_source": INSTALL[container.name],
            **extra,
        }
        pillar = container.path("/srv/pillar")
        pillar.mkdir(parents=True, exist_ok=True)
        (pillar / "top.sls").write_text("base:\n  '*':\n    - distsync\n")
        (pillar / "distsync.sls").write_text(yaml.safe_dump({"distsync": settings}))
        (pillar / "distsync.sls").chmod(0o600)

    def salt(self, container: Container, *args: str, timeout: float = 900) -> Apply:
        proc = sh(
            [
                "nsenter",
                "-t",
                str(container.leader),
                "-a",
                SALT_CALL,
                "--local",
                "--out=json",
                *args,
            ],
            check=False,
            timeout=timeout,
        )
        output = proc.stdout + proc.stderr
        try:
            data = json.loads(proc.stdout)["local"]
        except (ValueError, KeyError):
            return Apply(proc.returncode, {}, output)
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            return Apply(proc.returncode, {}, output)  # not state results
        results = {value.get("__id__", key): value for key, value in data.items()}
        return Apply(proc.returncode, results, output)

    def apply(self, *args: str) -> dict[str, Apply]:
        """state.apply distsync on every container at once."""
        with concurrent.futures.ThreadPoolExecutor(len(self.containers)) as pool:
            runs = {
                c.name: pool.submit(self.salt, c, "state.apply", "distsync", *args)
                for c in self.containers
            }
            return {name: run.result() for name, run in runs.items()}

    def upload(self, path: Path, uid: int, gid: int) -> str:
        home = self.fleet.workdir / "uploader-home"
        env = {"PATH": os.environ["PATH"], "HOME": str(home)}
        cmd = [
            "setpriv",
            f"--reuid={uid}",
            f"--regid={gid}",
            "--clear-groups",
            "--",
            REPO / ".venv" / "bin" / "distsync",
            "upload",
            "-c",
            self.upload_config,
            path,
        ]
        return sh(cmd, env=env, timeout=120).stdout


def _assert_ok(runs: dict[str, Apply], what: str) -> None:
    for name, run in runs.items():
        assert run.rc == 0 and run.results and not run.failed(), (
            f"{what} on {name} failed: {run.failed()}\n{run.output[-6000:]}"
        )


@pytest.fixture(scope="module")
def rootfs() -> Path:
    proc = sh([HERE / "rootfs.sh"], timeout=900)
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def engine_wheelhouse() -> Path:
    """`make wheelhouse` (as an operator builds it), cached by the engine's content."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "python").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and ".egg-info" not in str(path):
            if "build" in path.relative_to(REPO / "python").parts[:1]:
                continue
            digest.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    digest.update(str(sys.version_info[:2]).encode())
    cached = REPO / ".cache" / "salt-engine-wheelhouse" / digest.hexdigest()[:16]
    if not (cached / ".complete").exists():
        shutil.rmtree(cached, ignore_errors=True)
        sh(
            ["make", "-C", REPO, "--no-print-directory", "wheelhouse", f"WHEELHOUSE={cached}"],
            timeout=900,
        )
        (cached / ".complete").touch()
    return cached


@pytest.fixture(scope="module")
def site(
    rootfs: Path, engine_wheelhouse: Path, request: pytest.FixtureRequest
) -> Iterator[SaltSite]:
    # run.sh's trap cleans up after "$state" and "$state"-*: this fleet's state directory.
    base = os.environ.get("DISTSYNC_SYSTEMD_RUN_ID") or secrets.token_hex(3)
    run_id = f"{base}-salt"
    workdir = REPO / ".cache" / "systemd-run" / run_id
    bucket_root = Path("/srv") / f"distsync-salt-{base}"
    setup = workdir / "setup"
    setup.mkdir(parents=True)
    sh(
        [
            REPO / ".venv" / "bin" / "distsync",
            "setup",
            "--non-interactive",
            "--storage",
            "local",
            "--bucket",
            bucket_root / "bucket",
            "--output-dir",
            OUTPUT_DIR,
            "--upload-config",
            setup / "distsync",
            "--daemon-config",
            setup / "distsyncd",
        ]
    )
    secret = tomllib.loads((setup / "distsyncd").read_text())["SharedSecret"]
    extra_root = workdir / "salt-extra"
    extra_root.mkdir()
    shutil.copytree(
        engine_wheelhouse,
        extra_root / "distsync-wheels",
        ignore=shutil.ignore_patterns(".complete"),
    )
    fleet = Fleet(
        # Debian 12: the host-built Salt wheelhouse serves this host's Python (3.11).
        roots={name: rootfs for name in INSTALL},
        workdir=workdir,
        run_id=run_id,
        binds=[
            (REPO, COLLECTION),
            (salt_wheelhouse(), SALT_WHEELS),
            (extra_root, EXTRA_ROOT),
            (bucket_root / "bucket", BUCKET),
        ],
    )
    keep = True
    try:
        fleet.start()
        site = SaltSite(fleet, secret, setup / "distsync", bucket_root / "bucket")
        _install_salt(site)
        yield site
        keep = request.session.testsfailed > 0
    finally:
        fleet.close()
        leftovers = [ns for ns in sh(["ip", "netns", "list"]).stdout.split() if run_id in ns]
        assert not leftovers, f"namespaces left behind: {leftovers}"
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
            shutil.rmtree(bucket_root, ignore_errors=True)
        else:
            print(f"\nkept {workdir} for inspection")


MINION = {
    "file_client": "local",
    "file_roots": {"base": [f"{COLLECTION}/salt", EXTRA_ROOT]},
    "pillar_roots": {"base": ["/srv/pillar"]},
    "enable_fqdns_grains": False,
    "enable_gpu_grains": False,
}


def _install_salt(site: SaltSite) -> None:
    """Salt from the host's wheelhouse, into a venv of its own: no engine in its Python."""

    def install(container: Container) -> None:
        container.run("python3", "-m", "venv", "/opt/salt", timeout=300)
        container.run(
            "/opt/salt/bin/pip",
            "install",
            "--quiet",
            "--no-index",
            "--disable-pip-version-check",
            "--find-links",
            SALT_WHEELS,
            "salt==3008.4",
            timeout=900,
        )
        config = container.path("/etc/salt/minion")
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(yaml.safe_dump(MINION))
        site.pillar(container)
        # What a masterless user does once: fetch the formula's custom modules (state.apply
        # of one SLS does not sync them before it renders).
        synced = site.salt(container, "saltutil.sync_all")
        assert synced.rc == 0, synced.output

    with concurrent.futures.ThreadPoolExecutor(len(site.containers)) as pool:
        for future in [pool.submit(install, c) for c in site.containers]:
            future.result()


@pytest.fixture(scope="module")
def deployed(site: SaltSite) -> SaltSite:
    """test=True on the fresh hosts, then the first real apply."""
    site.fresh_check = site.apply("test=True")
    site.first = site.apply()
    _assert_ok(site.first, "the first apply")
    return site


def _distsync_ids(container: Container) -> tuple[int, int]:
    entry = next(
        line.split(":")
        for line in container.path("/etc/passwd").read_text().splitlines()
        if line.startswith("distsync:")
    )
    return int(entry[2]), int(entry[3])


# -- the tests, in life-cycle order ----------------------------------------------------------


def test_test_mode_on_fresh_hosts_reports_and_changes_nothing(deployed: SaltSite) -> None:
    for name, run in deployed.fresh_check.items():
        # A fresh host has no venv yet: the states that need the engine cannot be decided,
        # and say so, but nothing fails for real and nothing is written.
        assert run.results, run.output[-4000:]
        pending = [key for key, r in run.results.items() if r["result"] is None]
        assert "distsync-engine" in pending and "distsync-unit" in pending, (name, pending)
    # What test=True skipped, the real apply did.
    for container in deployed.containers:
        assert container.path(UNIT_FILE).is_file()


def test_daemon_active(deployed: SaltSite) -> None:
    for container in deployed.containers:
        wait_for(
            f"{UNIT} active on {container.name}",
            lambda c=container: (
                c.run("systemctl", "is-active", UNIT, check=False).strip() == "active"
            ),
            timeout=60,
        )
        assert container.run("systemctl", "is-enabled", UNIT).strip() == "enabled"
        assert container.show(UNIT, "User") == "distsync"
        config = container.path("/etc/distsync/distsyncd.toml").stat()
        assert oct(config.st_mode & 0o777) == "0o600"
        assert (config.st_uid, config.st_gid) == _distsync_ids(container)
        release_dir = container.path("/srv/site").stat()
        assert (release_dir.st_uid, release_dir.st_gid) == _distsync_ids(container)


def test_source_payload_is_the_engine_without_caches(deployed: SaltSite) -> None:
    """s2 installs from files/engine, the link to python/ (which holds __pycache__ here)."""
    assert list((REPO / "python").rglob("__pycache__")), "nothing to leave out"
    payload = deployed.fleet.containers["s2"].path("/opt/distsync/payload/source")
    assert (payload / "pyproject.toml").is_file() and (payload / "distsync" / "cli.py").is_file()
    # (pip's build leaves distsync.egg-info there, on the minion: that one is not shipped.)
    shipped = [p.relative_to(payload).as_posix() for p in payload.rglob("*")]
    assert not [p for p in shipped if "__pycache__" in p or p.endswith(".pyc")], shipped


def test_secret_never_in_salt_output(deployed: SaltSite) -> None:
    for runs in (deployed.fresh_check, deployed.first):
        for run in runs.values():
            assert deployed.secret not in run.output


def test_engine_module_says_why_it_is_absent(deployed: SaltSite) -> None:
    """Salt's Python in the containers has no engine (the formula's venv does)."""
    container = deployed.containers[0]
    proc = sh(
        ["nsenter", "-t", str(container.leader), "-a", SALT_CALL, "--local", "distsync.list"],
        check=False,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "'distsync' __virtual__ returned False: distsync: the engine is not importable" in (
        proc.stdout + proc.stderr
    )


def test_bad_settings_stop_before_any_change(deployed: SaltSite) -> None:
    container = deployed.containers[0]
    before = container.path("/etc/distsync/distsyncd.toml").read_bytes()
    for pillar, message in (
        ({"output_dir": "srv/out"}, "output_dir must be an absolute path, not srv/out"),
        ({"shared_secret": ""}, "set pillar distsync:shared_secret and distsync:storage_bucket"),
        ({"install_source": "git"}, "install_source must be source, pypi or wheelhouse"),
        (
            {"releases": [{"match": "x-*", "dir": "rel"}]},
            "releases: dir must be an absolute path, not rel",
        ),
        # Rendered, then refused by the installed engine before it replaces the live file.
        ({"poll_interval": 0}, ": PollInterval: "),
    ):
        run = deployed.salt(
            container, "state.apply", "distsync", f"pillar={json.dumps({'distsync': pillar})}"
        )
        assert run.rc != 0 and message in run.output, run.output[-3000:]
        assert deployed.secret not in run.output
    assert container.path("/etc/distsync/distsyncd.toml").read_bytes() == before
    assert container.run("systemctl", "is-active", UNIT, check=False).strip() == "active"


def _installed(container: Container, name: str, digest: str) -> bool:
    path = container.path(f"{OUTPUT_DIR}/{name}")
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_host_upload_reaches_the_output_dirs(deployed: SaltSite) -> None:
    uid, gid = _distsync_ids(deployed.containers[0])
    assert {_distsync_ids(c) for c in deployed.containers} == {(uid, gid)}
    home = deployed.fleet.workdir / "uploader-home"
    home.mkdir(exist_ok=True)
    for path in (deployed.bucket, *deployed.bucket.rglob("*"), deployed.upload_config, home):
        os.chown(path, uid, gid)
    artifact = home / "app.bin"
    artifact.write_bytes(os.urandom(2 * 1024 * 1024 + 321))
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    print(deployed.upload(artifact, uid, gid))
    for container in deployed.containers:
        wait_for(
            f"app.bin on {container.name}",
            lambda c=container: _installed(c, "app.bin", digest),
            timeout=90,
        )


def test_second_apply_changes_nothing(deployed: SaltSite) -> None:
    runs = deployed.apply()
    _assert_ok(runs, "the second apply")
    assert {name: run.changed() for name, run in runs.items()} == {"s1": {}, "s2": {}}


def test_test_mode_on_converged_hosts_changes_nothing(deployed: SaltSite) -> None:
    runs = deployed.apply("test=True")
    _assert_ok(runs, "test=True on converged hosts")
    assert {name: run.changed() for name, run in runs.items()} == {"s1": {}, "s2": {}}
    assert all(r["result"] is True for run in runs.values() for r in run.results.values())


def _exposure(text: str) -> float:
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", text)
    assert match, text
    return float(match.group(1))


def test_unit_is_the_roles_with_the_same_exposure(deployed: SaltSite, tmp_path: Path) -> None:
    """The role renders its unit with the same variables: same text, same score."""
    defaults = yaml.safe_load((REPO / "roles" / "daemon" / "defaults" / "main.yml").read_text())
    fixed = yaml.safe_load((REPO / "roles" / "daemon" / "vars" / "main.yml").read_text())
    variables = {f"distsync_daemon_{k}": v for k, v in SETTINGS.items()}
    variables["distsync_daemon_shared_secret"] = deployed.secret
    (tmp_path / "out" / "role").mkdir(parents=True)
    inventory = {"all": {"vars": {**defaults, **fixed}, "hosts": {"role": variables}}}
    (tmp_path / "inventory.json").write_text(json.dumps(inventory))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"))
    sh(
        [
            REPO / ".venv" / "bin" / "ansible-playbook",
            "-i",
            tmp_path / "inventory.json",
            HERE / "render.yml",
            "-e",
            f"render_dir={tmp_path / 'out'}",
        ],
        env=env,
        timeout=300,
    )
    role_unit = (tmp_path / "out" / "role" / "distsync.service").read_text()
    container = deployed.containers[0]
    salt_unit = container.path(UNIT_FILE).read_text()
    assert salt_unit.split("\n")[3:] == role_unit.split("\n")[3:]
    container.path("/root/role-distsync.service").write_text(role_unit)
    scores = {}
    for label, path in (("salt", UNIT_FILE), ("role", "/root/role-distsync.service")):
        out = container.run(
            "systemd-analyze", "security", "--no-pager", "--offline=true", path, check=False
        )
        scores[label] = _exposure(out)
    online = _exposure(
        container.run("systemd-analyze", "security", "--no-pager", UNIT, check=False)
    )
    print(f"exposure: salt {scores['salt']}, role {scores['role']}, salt online {online}")
    assert scores["salt"] == scores["role"] <= 2.0
    assert online <= 2.0


def test_config_change_restarts_the_daemon(deployed: SaltSite) -> None:
    container = deployed.fleet.containers["s2"]
    before = int(container.show(UNIT, "MainPID"))
    deployed.pillar(container, poll_interval=2)
    run = deployed.salt(container, "state.apply", "distsync")
    _assert_ok({"s2": run}, "a config change")
    assert set(run.changed()) == {"distsync-config", "distsync-service"}, run.changed()
    assert run.results["distsync-config"]["changes"] == {"diff": "<show_changes=False>"}
    assert deployed.secret not in run.output
    wait_for(
        "the restarted daemon",
        lambda: (
            int(container.show(UNIT, "MainPID")) not in (0, before)
            and container.run("systemctl", "is-active", UNIT, check=False).strip() == "active"
        ),
        timeout=60,
    )
