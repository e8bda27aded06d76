"""The daemon role on real systemd: three containers, one shared store, the whole life cycle.

One fleet of Debian 12 (Python 3.11, systemd 252) and Debian 13 (Python 3.13, systemd 257)
served by one wheelhouse built for both (`make wheelhouse PYTHONS="3.11 3.13" TORRENT=1`):
c1 (Debian 12) installs from the wheelhouse with the torrent extra, c2 (Debian 13) from the
collection's source (offline, with the wheelhouse as its only index), c3 (Debian 13) from the
wheelhouse with the torrent extra and a config file written by `distsync setup`. Before
anything else, a wheelhouse without the 3.13 wheels is refused for c2 before the host
changes. The store is ``Storage = "Local"``: a host directory bind-mounted read-only into
every container (a shared file system), written by uploads on the host.

Needs root, systemd-nspawn, debootstrap and iproute2 (tests/systemd/run.sh installs them);
skipped otherwise, unless DISTSYNC_SYSTEMD_REQUIRED=1 turns the skip into a failure.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomllib
from harness import REPO, Container, Fleet, PlaybookRun, sh, systemd_version, wait_for

HERE = Path(__file__).resolve().parent
SITE = REPO / "playbooks" / "site.yml"
PINS = REPO / "requirements" / "test.txt"
UPLOAD = REPO / "playbooks" / "upload.yml"
UNIT = "distsync.service"
OUTPUT_DIR = "/srv/distsync"
BUCKET_IN_CONTAINER = "/srv/distsync-bucket"
EXPOSURE_LIMIT = 2.0
# Which root each container boots, and the Python versions the wheelhouse is built for.
SUITES = {"c1": "bookworm", "c2": "trixie", "c3": "trixie"}
PYTHONS = ("3.11", "3.13")
# One container per systemd version, for the checks of the unit itself.
PER_SYSTEMD = ("c1", "c3")
# The service user's uid and gid on every container (free in both roots).
SERVICE_ID = "900"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, systemd-nspawn)"
    for tool in ("systemd-nspawn", "debootstrap", "ip", "nsenter", "setpriv", "ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"needs {tool} (tests/systemd/run.sh installs it)"
    return None


if (_reason := _missing()) is not None:
    if os.environ.get("DISTSYNC_SYSTEMD_REQUIRED") == "1":
        raise RuntimeError(_reason)
    pytest.skip(_reason, allow_module_level=True)


# -- fixtures: root file system, wheelhouse, fleet, deployment ------------------------------


@pytest.fixture(scope="module")
def roots() -> dict[str, Path]:
    """The Debian 12 and 13 roots, built side by side the first time (then cached)."""
    builds = {
        suite: subprocess.Popen(
            [HERE / "rootfs.sh"],
            env=dict(os.environ, DISTSYNC_ROOTFS_SUITE=suite),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for suite in sorted(set(SUITES.values()))
    }
    paths = {}
    for suite, proc in builds.items():
        try:
            out, err = proc.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        assert proc.returncode == 0, f"rootfs.sh {suite} failed:\n{err[-3000:]}"
        paths[suite] = Path(out.strip().splitlines()[-1])
    return paths


@pytest.fixture(scope="module")
def engine_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A snapshot of python/ (as the role ships it): the fleet's source for the whole module.

    The working tree may change while the tests run; a second playbook run must see the
    same source as the first to be expected to change nothing.
    """
    stage = tmp_path_factory.mktemp("engine")
    packer = REPO / "roles" / "daemon" / "files" / "pack_payload.py"
    sh([REPO / ".venv" / "bin" / "python", packer, stage / "src.tar", "--source", REPO / "python"])
    sh(["tar", "-xf", stage / "src.tar", "-C", stage])
    return stage / "source"


@pytest.fixture(scope="module")
def wheelhouse(engine_source: Path) -> Path:
    """`make wheelhouse` for Python 3.11 and 3.13 with the torrent extra, from the snapshot.

    Cached under .cache/ by everything that shapes it: built once per change of python/, of
    the pins or of the builder.
    """
    tar = engine_source.parent / "src.tar"
    shaping = [tar, REPO / "requirements" / "test.txt", REPO / "roles/daemon/files/wheelhouse.py"]
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in shaping)).hexdigest()
    key = hashlib.sha256(f"{digest} {PYTHONS} torrent".encode()).hexdigest()[:16]
    cached = REPO / ".cache" / "systemd-wheelhouse" / key
    if (cached / ".complete").exists():
        return cached
    building = cached.with_name(f"{key}.tmp{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    sh(["make", "--no-print-directory", "-C", REPO, "wheelhouse", f"WHEELHOUSE={building}",
        f"SOURCE={engine_source}", f"PYTHONS={' '.join(PYTHONS)}", "TORRENT=1"], timeout=900)
    (building / ".complete").touch()
    shutil.rmtree(cached, ignore_errors=True)
    building.rename(cached)
    return cached


@pytest.fixture(scope="module")
def wheelhouse_without_313(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same wheels less the per-version ones for 3.13: what `make wheelhouse` gave before."""
    partial = tmp_path_factory.mktemp("wheelhouse-no-cp313-")
    for wheel in wheelhouse.glob("*.whl"):
        if "-cp313-" not in wheel.name:
            shutil.copy(wheel, partial)
    return partial


@dataclass
class Site:
    fleet: Fleet
    inventory: Path
    secret: str
    upload_config: Path
    bucket: Path
    uploader: tuple[int, int] | None = None  # the distsync uid/gid inside the containers
    refused: PlaybookRun | None = None  # the run with a wheelhouse that lacks 3.13's wheels
    refused_left: tuple[str, ...] = ()  # what that run left on the host
    fresh_check: PlaybookRun | None = None
    first: PlaybookRun | None = None

    @property
    def containers(self) -> list[Container]:
        return list(self.fleet.containers.values())

    def hand_store_to_uploader(self) -> None:
        """A shared file system needs one owner on every side: the uid the daemons read with."""
        assert self.uploader is not None
        uid, gid = self.uploader
        home = self.fleet.workdir / "uploader-home"
        home.mkdir(exist_ok=True)
        for path in (self.bucket, *self.bucket.rglob("*"), self.upload_config, home):
            os.chown(path, uid, gid)

    def artifact(self, name: str, data: bytes) -> Path:
        """A build artifact on the host, readable by the uploader."""
        path = self.fleet.workdir / "uploader-home" / name
        path.write_bytes(data)
        path.chmod(0o644)
        return path

    def upload(self, path: Path, *extra: str) -> str:
        """`distsync upload` on the host, as the uid the daemons read the store with."""
        assert self.uploader is not None
        uid, gid = self.uploader
        env = {"PATH": os.environ["PATH"], "HOME": str(self.fleet.workdir / "uploader-home")}
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
            *extra,
            path,
        ]
        return sh(cmd, env=env, timeout=120).stdout


@pytest.fixture(scope="module")
def site(
    request: pytest.FixtureRequest, roots: dict[str, Path], wheelhouse: Path, engine_source: Path
) -> Iterator[Site]:
    run_id = os.environ.get("DISTSYNC_SYSTEMD_RUN_ID") or secrets.token_hex(3)
    workdir = REPO / ".cache" / "systemd-run" / run_id
    # Never under /tmp or /var/tmp (a clone may live there): the unit's PrivateTmp would hide
    # a bucket bound below them from c3, whose config names the bucket by its host path.
    bucket_root = Path("/srv") / f"distsync-systemd-{run_id}"
    bucket = bucket_root / "bucket"
    setup_dir = workdir / "setup"
    setup_dir.mkdir(parents=True)
    sh(
        [
            REPO / ".venv" / "bin" / "distsync",
            "setup",
            "--non-interactive",
            "--storage",
            "local",
            "--bucket",
            bucket,
            "--output-dir",
            OUTPUT_DIR,
            "--upload-config",
            setup_dir / "distsync",
            "--daemon-config",
            setup_dir / "distsyncd",
        ]
    )
    written = tomllib.loads((setup_dir / "distsyncd").read_text())
    secret, signers = written["SharedSecret"], written["TrustedSigners"]
    fleet = Fleet(
        roots={name: roots[suite] for name, suite in SUITES.items()},
        workdir=workdir,
        run_id=run_id,
        # The store at a neutral path for rendered configs, and at the host's own path for
        # the file `distsync setup` wrote (it names the bucket by its absolute path).
        binds=[(bucket, BUCKET_IN_CONTAINER), (bucket, str(bucket))],
    )
    keep = True
    try:
        fleet.start()
        inventory = workdir / "inventory.yml"
        inventory.write_text(
            json.dumps(_inventory(fleet, secret, signers, wheelhouse, engine_source, setup_dir))
        )
        yield Site(fleet, inventory, secret, setup_dir / "distsync", bucket)
        keep = request.session.testsfailed > 0
    finally:
        fleet.close()
        leftovers = [ns for ns in sh(["ip", "netns", "list"]).stdout.split() if run_id in ns]
        assert not leftovers, f"namespaces left behind: {leftovers}"
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
            shutil.rmtree(bucket_root, ignore_errors=True)
        else:
            print(f"\nkept {workdir} (console logs, inventory) for inspection")


def _inventory(
    fleet: Fleet,
    secret: str,
    signers: list[str],
    wheelhouse: Path,
    source: Path,
    setup_dir: Path,
) -> dict[str, Any]:
    c1, c2, c3 = (fleet.containers[name] for name in ("c1", "c2", "c3"))
    return {
        "distsync_servers": {
            "hosts": {
                c1.name: {
                    "ansible_host": c1.address,
                    "distsync_daemon_install_source": "wheelhouse",
                    "distsync_daemon_torrent": True,
                },
                c2.name: {"ansible_host": c2.address, "distsync_daemon_install_source": "source"},
                c3.name: {
                    "ansible_host": c3.address,
                    "distsync_daemon_install_source": "wheelhouse",
                    "distsync_daemon_torrent": True,
                    "distsync_daemon_config_src": str(setup_dir / "distsyncd"),
                },
            },
            "vars": {
                "ansible_user": "root",
                "ansible_python_interpreter": "/usr/bin/python3",
                "ansible_ssh_private_key_file": str(fleet.key),
                "ansible_ssh_common_args": " ".join(fleet.ssh_args()[2:]),
                # The containers have no route out: every install is offline.
                "distsync_daemon_wheelhouse": str(wheelhouse),
                "distsync_daemon_source_path": str(source),
                "distsync_daemon_shared_secret": secret,
                # c3's file from `distsync setup` carries the same key itself.
                "distsync_daemon_trusted_signers": signers,
                "distsync_daemon_storage": "Local",
                "distsync_daemon_storage_bucket": BUCKET_IN_CONTAINER,
                "distsync_daemon_output_dir": OUTPUT_DIR,
                "distsync_daemon_poll_interval": 1,
                "distsync_daemon_poll_jitter": 0.5,
                "distsync_daemon_watchdog_sec": "10s",
                "distsync_daemon_timeout_start_sec": "2min",
                # Runs in the unit's sandbox: the state directory is one it may write.
                "distsync_daemon_on_update": [
                    "/bin/sh",
                    "-c",
                    'echo "$DISTSYNC_NAME $DISTSYNC_VERSION $DISTSYNC_SHA256"'
                    " >> /var/lib/distsync/hook.log",
                ],
            },
        }
    }


def _assert_ok(run: PlaybookRun, what: str) -> None:
    assert run.rc == 0 and not run.failed_hosts(), f"{what} failed:\n{run.output[-6000:]}"
    assert set(run.recap) == {"c1", "c2", "c3"}, f"{what}: recap {run.recap}\n{run.output[-3000:]}"


# What the role creates on a host: none of it may exist after a refused run.
ROLE_TRACES = ("/opt/distsync", "/etc/distsync", "/etc/systemd/system/distsync.service",
               OUTPUT_DIR, "/var/lib/distsync")


@pytest.fixture(scope="module")
def deployed(site: Site, wheelhouse_without_313: Path) -> Site:
    """A refused run on a fresh Debian 13 host, check mode on the fresh hosts, the first run."""
    versions = {
        c.name: c.run("python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])").strip()
        for c in site.containers
    }
    assert versions == {"c1": "3.11", "c2": "3.13", "c3": "3.13"}, versions
    c2 = site.fleet.containers["c2"]
    site.refused = site.fleet.playbook(
        site.inventory, SITE, "--limit", "c2",
        "-e", f"distsync_daemon_wheelhouse={wheelhouse_without_313}",
    )
    passwd = c2.path("/etc/passwd").read_text()
    site.refused_left = tuple(path for path in ROLE_TRACES if c2.path(path).exists()) + (
        ("user distsync",) if "\ndistsync:" in f"\n{passwd}" else ()
    )
    # A shared file system needs one uid on every side (docs/operations.md, Storage =
    # "Local"): Debian 12 and 13 would give the system user different ids, so it is made
    # first, as that guide tells operators; the role then finds it as it wants it.
    # A host the refused run changed cannot be set up this way: stop here, saying so.
    assert not site.refused_left, f"the refused run changed c2: {site.refused_left}"
    for container in site.containers:
        container.run("groupadd", "--system", "--gid", SERVICE_ID, "distsync")
        container.run("useradd", "--system", "--uid", SERVICE_ID, "--gid", "distsync",
                      "--comment", "distsync daemon", "--home-dir", "/var/lib/distsync",
                      "--no-create-home", "--shell", "/usr/sbin/nologin", "distsync")
    site.fresh_check = site.fleet.playbook(site.inventory, SITE, "--check", "--diff")
    _assert_ok(site.fresh_check, "check mode on fresh hosts")
    site.first = site.fleet.playbook(site.inventory, SITE, "--diff")
    _assert_ok(site.first, "the first run")
    uids = set()
    for container in site.containers:
        entry = next(
            line.split(":")
            for line in container.path("/etc/passwd").read_text().splitlines()
            if line.startswith("distsync:")
        )
        uids.add((int(entry[2]), int(entry[3])))
    assert uids == {(int(SERVICE_ID), int(SERVICE_ID))}, f"the distsync user changed: {uids}"
    site.uploader = uids.pop()
    site.hand_store_to_uploader()
    return site


# -- the tests, in life-cycle order ----------------------------------------------------------


def test_a_wheelhouse_without_the_hosts_python_is_refused_before_anything_changes(
    deployed: Site, wheelhouse_without_313: Path
) -> None:
    run = deployed.refused
    assert run is not None
    assert run.rc != 0 and run.failed_hosts() == ["c2"], run.output[-4000:]
    assert run.recap["c2"]["changed"] == 0, run.recap
    messages = re.findall(r'"msg": "(wheelhouse: [^"\n]*(?:\\"[^"\n]*)*)"', run.output)
    assert len(messages) == 1, run.output[-4000:]
    pinned = re.search(r"^cryptography==(\S+)$", PINS.read_text(), re.M)
    assert pinned is not None
    assert (
        f"wheelhouse: {wheelhouse_without_313} has no wheel of cffi>=2.0.0 (needed by "
        f"cryptography {pinned[1]}) for CPython 3.13 (/usr/bin/python3) on glibc 2.41, x86_64"
    ) in messages[0]
    assert deployed.refused_left == (), deployed.refused_left



def test_check_mode_on_fresh_hosts_reports_changes_and_changes_nothing(deployed: Site) -> None:
    run = deployed.fresh_check
    assert run is not None
    assert all(count > 0 for count in run.changed().values()), run.recap
    # What check mode skipped, the real run did: the unit appeared only then.
    for container in deployed.containers:
        assert container.path("/etc/systemd/system/distsync.service").is_file()


def test_secrets_never_reach_ansible_output(deployed: Site) -> None:
    for run in (deployed.fresh_check, deployed.first):
        assert run is not None
        assert deployed.secret not in run.output


def test_daemon_active_everywhere(deployed: Site) -> None:
    for container in deployed.containers:
        wait_for(
            f"{UNIT} active on {container.name}",
            lambda c=container: (
                c.run("systemctl", "is-active", UNIT, check=False).strip() == "active"
            ),
            timeout=30,
        )
        assert container.run("systemctl", "is-enabled", UNIT).strip() == "enabled"
        assert container.show(UNIT, "User") == "distsync"


def test_every_daemon_installs_only_signed_uploads(deployed: Site) -> None:
    """Rendered (c1, c2) or copied (c3), each config trusts the setup's signing key."""
    for container in deployed.containers:
        config = tomllib.loads(container.path("/etc/distsync/distsyncd.toml").read_text())
        assert config["TrustedSigners"] and "SigningKey" not in config
        journal = container.run("journalctl", "-u", UNIT, "--no-pager", "-o", "cat")
        assert "has no TrustedSigners" not in journal, journal


def test_config_file_is_private_to_the_service_user(deployed: Site) -> None:
    for container in deployed.containers:
        stat = container.path("/etc/distsync/distsyncd.toml").stat()
        assert oct(stat.st_mode & 0o777) == "0o600"
        assert (stat.st_uid, stat.st_gid) == deployed.uploader


@pytest.mark.parametrize("name", PER_SYSTEMD)
def test_unit_verifies_cleanly(deployed: Site, name: str) -> None:
    container = deployed.fleet.containers[name]
    proc = sh(
        [
            "nsenter",
            "-t",
            str(container.leader),
            "-a",
            "systemd-analyze",
            "verify",
            "/etc/systemd/system/distsync.service",
        ],
        check=False,
    )
    # verify exits 0 even on unknown keys: any message at all is a failure.
    assert proc.returncode == 0 and proc.stderr == "" and proc.stdout == "", proc


def _exposure(text: str) -> float:
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", text)
    assert match, text
    return float(match.group(1))


@pytest.mark.parametrize("name", PER_SYSTEMD)
def test_unit_hardening_exposure(deployed: Site, name: str) -> None:
    container = deployed.fleet.containers[name]
    version = systemd_version(container.path("/"))
    offline = container.run(
        "systemd-analyze",
        "security",
        "--no-pager",
        "--offline=true",
        "/etc/systemd/system/distsync.service",
        check=False,
    )
    online = container.run("systemd-analyze", "security", "--no-pager", UNIT, check=False)
    print(f"{name} systemd {version}: exposure offline {_exposure(offline)}, "
          f"online {_exposure(online)}")
    assert _exposure(offline) <= EXPOSURE_LIMIT, offline
    assert _exposure(online) <= EXPOSURE_LIMIT, online


# What the engine needs at run time, under exactly the unit's sandbox: cryptography (no W+X
# memory), botocore, and libtorrent's session (netlink, threads, its own allocator).
SANDBOX_PROBE = """
import boto3, libtorrent
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from distsync.cli import build_parser
AESGCM(AESGCM.generate_key(bit_length=128)).encrypt(bytes(12), b"probe", None)
boto3.client("s3", region_name="us-east-1", endpoint_url="http://127.0.0.1:9")
libtorrent.session({"listen_interfaces": "127.0.0.1:0", "enable_dht": False}).pause()
print("sandbox ok")
"""
NOT_SANDBOX = {
    "Type",
    "NotifyAccess",
    "ExecStart",
    "Restart",
    "RestartSec",
    "TimeoutStartSec",
    "TimeoutStopSec",
    "WatchdogSec",
}


@pytest.mark.parametrize("name", PER_SYSTEMD)  # both have the torrent extra
def test_engine_works_under_the_units_sandbox(deployed: Site, name: str) -> None:
    container = deployed.fleet.containers[name]
    unit = container.path("/etc/systemd/system/distsync.service").read_text()
    service = unit.split("[Service]", 1)[1].split("[Install]", 1)[0]
    properties = [
        line
        for line in service.splitlines()
        if "=" in line and not line.startswith("#") and line.split("=", 1)[0] not in NOT_SANDBOX
    ]
    assert "MemoryDenyWriteExecute=true" in properties
    cmd = ["systemd-run", "--wait", "--pipe", "--collect", "--quiet"]
    cmd += [f"--property={prop}" for prop in properties]
    cmd += ["/opt/distsync/venv/bin/python", "-c", SANDBOX_PROBE]
    assert container.run(*cmd, timeout=120).strip() == "sandbox ok"


def _installed(container: Container, name: str, digest: str) -> bool:
    path = container.path(f"{OUTPUT_DIR}/{name}")
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_upload_reaches_every_output_dir_byte_identically(deployed: Site) -> None:
    artifact = deployed.artifact("app.bin", os.urandom(3 * 1024 * 1024 + 12345))
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    print(deployed.upload(artifact))
    for container in deployed.containers:
        wait_for(
            f"app.bin on {container.name}",
            lambda c=container: _installed(c, "app.bin", digest),
            timeout=60,
        )
    # The hook ran inside the sandbox, as the service user, with the documented environment.
    for container in deployed.containers[:2]:  # c3's config comes from `distsync setup`: no hook
        hook_log = container.path("/var/lib/distsync/hook.log")
        wait_for(f"the hook on {container.name}", hook_log.exists, timeout=30)
        assert f"app.bin 1 {digest}" in hook_log.read_text()


def test_upload_playbook_publishes_once(deployed: Site) -> None:
    artifact = deployed.artifact("web.tar", os.urandom(200_000))
    digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
    # As root: ansible-playbook cannot run as the uploader uid here (the venv's interpreter
    # lives under /root). The daemons retry what they cannot read until the chown below.
    cmd = [
        REPO / ".venv" / "bin" / "ansible-playbook",
        UPLOAD,
        "-e",
        f"distsync_upload_src={artifact}",
        "-e",
        "distsync_upload_name=web.tar",
        "-e",
        f"distsync_upload_config={deployed.upload_config}",
    ]
    env = deployed.fleet.ansible_env()
    first = sh(cmd, env=env, timeout=300).stdout
    assert re.search(r"localhost\s+:.*changed=1", first), first
    again = sh(cmd, env=env, timeout=300).stdout
    assert re.search(r"localhost\s+:.*changed=0", again), again
    assert "already published" in again
    deployed.hand_store_to_uploader()
    for container in deployed.containers:
        wait_for(
            f"web.tar on {container.name}",
            lambda c=container: _installed(c, "web.tar", digest),
            timeout=60,
        )


@pytest.mark.parametrize("name", PER_SYSTEMD)
def test_systemd_restarts_a_killed_daemon(deployed: Site, name: str) -> None:
    container = deployed.fleet.containers[name]
    before = int(container.show(UNIT, "MainPID"))
    assert before > 0
    container.run("kill", "-9", str(before))

    def restarted() -> bool:
        pid = int(container.show(UNIT, "MainPID"))
        state = container.run("systemctl", "is-active", UNIT, check=False).strip()
        return pid not in (0, before) and state == "active"

    wait_for("systemd to restart the killed daemon", restarted, timeout=60, every=0.5)
    assert int(container.show(UNIT, "NRestarts")) >= 1


@pytest.mark.parametrize("name", ["c1", "c2"])
def test_watchdog_is_fed(deployed: Site, name: str) -> None:
    container = deployed.fleet.containers[name]
    assert container.show(UNIT, "WatchdogUSec") == "10s"
    restarts, pid = container.show(UNIT, "NRestarts"), container.show(UNIT, "MainPID")
    first = container.show(UNIT, "WatchdogTimestampMonotonic")
    wait_for(
        "a watchdog ping",
        lambda: container.show(UNIT, "WatchdogTimestampMonotonic") != first,
        timeout=12,
        every=0.5,
    )
    # Fed, not restarted (c1's kill -9 test may have restarted it once before).
    assert (container.show(UNIT, "NRestarts"), container.show(UNIT, "MainPID")) == (restarts, pid)


def test_second_run_changes_nothing(deployed: Site) -> None:
    run = deployed.fleet.playbook(deployed.inventory, SITE)
    _assert_ok(run, "the second run")
    assert run.changed() == {"c1": 0, "c2": 0, "c3": 0}, run.output[-6000:]


def test_check_mode_on_converged_hosts_changes_nothing(deployed: Site) -> None:
    # -vvv: even the most verbose output (module arguments, results) hides the secret.
    run = deployed.fleet.playbook(deployed.inventory, SITE, "--check", "--diff", "-vvv")
    _assert_ok(run, "check mode on converged hosts")
    assert run.changed() == {"c1": 0, "c2": 0, "c3": 0}, run.output[-6000:]
    assert deployed.secret not in run.output


def test_config_change_restarts_the_daemon(deployed: Site) -> None:
    container = deployed.containers[1]
    before = int(container.show(UNIT, "MainPID"))
    run = deployed.fleet.playbook(
        deployed.inventory,
        SITE,
        "--limit",
        container.name,
        "-e",
        "distsync_daemon_poll_interval=2",
    )
    assert run.rc == 0, run.output[-6000:]
    assert "RUNNING HANDLER [distsync.core.daemon : Restart distsync]" in run.output
    after = int(container.show(UNIT, "MainPID"))
    assert after not in (0, before)
    assert container.run("systemctl", "is-active", UNIT).strip() == "active"
    assert deployed.secret not in run.output


# -- releases ([[Release]]) under the unit's sandbox; last, since it reconfigures c1 -----------


def _webapp(deployed: Site, number: int, healthy: bool) -> Path:
    path = deployed.fleet.workdir / "uploader-home" / f"webapp-{number}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("VERSION", f"{number}\n"), ("health", "ok\n" if healthy else "no\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data.encode()))
    path.chmod(0o644)
    return path


def test_role_deploys_a_release_and_its_health_check(deployed: Site) -> None:
    container = deployed.fleet.containers["c1"]
    webapp = "/srv/webapp"
    releases = [
        {
            "match": "webapp-*.tar.gz",
            "dir": webapp,
            "keep": 2,
            "health_check": ["/bin/sh", "-c", 'test "$(cat health)" = ok'],
            "health_timeout": 10,
            "post_activate": [
                "/bin/sh",
                "-c",
                f'echo "$DISTSYNC_VERSION $PWD $DISTSYNC_PREVIOUS_DIR" >> {webapp}/post.log',
            ],
        }
    ]
    run = deployed.fleet.playbook(
        deployed.inventory,
        SITE,
        "--limit",
        container.name,
        "-e",
        json.dumps({"distsync_daemon_releases": releases}),
    )
    assert run.rc == 0 and not run.failed_hosts(), run.output[-6000:]
    assert "RUNNING HANDLER [distsync.core.daemon : Restart distsync]" in run.output
    unit = container.path("/etc/systemd/system/distsync.service").read_text()
    assert f" {webapp}" in next(x for x in unit.splitlines() if x.startswith("ReadWritePaths="))
    assert (container.path(webapp).stat().st_uid, container.path(webapp).stat().st_gid) == (
        deployed.uploader
    )

    def current() -> str | None:
        try:
            return os.readlink(container.path(f"{webapp}/current"))
        except FileNotFoundError:
            return None

    def releases_json() -> dict[str, Any]:
        out = container.run(
            "/opt/distsync/venv/bin/distsync",
            "releases",
            "-c",
            "/etc/distsync/distsyncd.toml",
            "--json",
        )
        return json.loads(out)[0]  # type: ignore[no-any-return]

    def journal() -> str:
        return container.run("journalctl", "-u", UNIT, "--no-pager", "-o", "cat", "-n", "60")

    def settled(version: str, healthy: bool) -> bool:
        """The activation of ``version`` has ended, as the daemon's own state says."""
        last = releases_json()["last"]
        return bool(last and last["version"] == version and last["healthy"] is healthy)

    v1 = deployed.upload(_webapp(deployed, 1, healthy=True)).split("\t")[1].split()[1]
    wait_for("release 1 healthy", lambda: settled(v1, True), 60)
    assert current() == f"releases/{v1}-webapp-1.tar.gz", journal()
    post = container.path(f"{webapp}/post.log")
    wait_for("PostActivate of release 1", post.exists, 30)
    assert post.read_text().split() == [v1, f"{webapp}/releases/{v1}-webapp-1.tar.gz"]

    v2 = deployed.upload(_webapp(deployed, 2, healthy=False)).split("\t")[1].split()[1]
    wait_for("release 2 to fail its health check", lambda: settled(v2, False), 90)
    row = releases_json()
    assert row["current"] == v1 and current() == f"releases/{v1}-webapp-1.tar.gz"
    failed = next(r for r in row["releases"] if r["failed"])
    assert failed["version"] == v2 and "HealthCheck exited 1" in failed["reason"]
    assert f"webapp-2.tar.gz version {v2} failed: HealthCheck" in journal()

    v3 = deployed.upload(_webapp(deployed, 3, healthy=True)).split("\t")[1].split()[1]
    wait_for("release 3 healthy", lambda: settled(v3, True), 60)
    assert current() == f"releases/{v3}-webapp-3.tar.gz", journal()
    # An operator's rollback, as root, handed to the sandboxed daemon through its request queue.
    rollback = sh(
        [
            "nsenter",
            "-t",
            str(container.leader),
            "-a",
            "/opt/distsync/venv/bin/distsync",
            "rollback",
            "-c",
            "/etc/distsync/distsyncd.toml",
            "webapp-3.tar.gz",
            "--json",
        ],
        timeout=120,
        check=False,
    )
    assert rollback.returncode == 0, f"{rollback.stderr}\n{journal()}"
    assert json.loads(rollback.stdout)[0]["held"] == v1
    assert current() == f"releases/{v1}-webapp-1.tar.gz"
    assert container.run("systemctl", "is-active", UNIT).strip() == "active"
