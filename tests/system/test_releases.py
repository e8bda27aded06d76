"""Issue 15 end to end: ``[[Release]]`` on ``Storage = "Local"``, every step a real process.

The daemon runs as ``python -m distsync daemon``; uploads, ``releases``, ``rollback`` and
``resume`` are the CLI. The application is a tarball whose ``health`` file says whether its
health check passes; hooks append to a log outside the release so the test can read what ran
and with which environment.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# tests/system is on sys.path (no __init__.py): the Local-store harness of issue 3's tests.
from test_local_flow import Site, wait_for

HEALTH_TIMEOUT = 10.0
# HealthCheck: the release's own `health` file decides; hooks log what they saw.
CHECK = [sys.executable, "-c", "import sys; sys.exit(open('health').read().strip() != 'ok')"]
LOG_HOOK = (
    "import os, sys; e = os.environ; open(sys.argv[1], 'a').write(' '.join(["
    "sys.argv[2], e['DISTSYNC_VERSION'], e['DISTSYNC_NAME'], e['DISTSYNC_RELEASE_DIR'],"
    " e['DISTSYNC_PREVIOUS_DIR'] or '-', e['DISTSYNC_SHA256'], os.getcwd()]) + '\\n')"
)


def app_tarball(path: Path, version: str, healthy: bool = True, files: int = 0) -> Path:
    """An application release: VERSION, health, bin/app, and ``files`` padding files."""
    with tarfile.open(path, "w:gz") as tar:

        def add(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))

        add("VERSION", version.encode())
        add("health", b"ok\n" if healthy else b"broken\n")
        add("bin/app", b"#!/bin/sh\necho app\n", 0o755)
        for i in range(files):
            add(f"static/{i:05d}.txt", os.urandom(512))
    return path


class Releases:
    """A Site whose daemon config has one [[Release]] for ``app-*.tar.gz``."""

    def __init__(self, local: Site, **release: Any) -> None:
        self.site = local
        self.dir = local.root / "app"
        self.hooks = local.root / "hooks.log"
        table = {
            "Match": "app-*.tar.gz",
            "Dir": str(self.dir),
            "Keep": 2,
            "HealthCheck": CHECK,
            "HealthTimeout": HEALTH_TIMEOUT,
            "PreActivate": [sys.executable, "-c", LOG_HOOK, str(self.hooks), "pre"],
            "PostActivate": [sys.executable, "-c", LOG_HOOK, str(self.hooks), "post"],
        }
        table.update(release)
        local.update_daemon_conf(Release=[table])
        self.builds = local.root / "builds"
        self.builds.mkdir(exist_ok=True)

    def upload(self, number: int, healthy: bool = True, files: int = 0) -> str:
        tarball = app_tarball(self.builds / f"app-{number}.tar.gz", f"v{number}", healthy, files)
        version, _sha = self.site.upload(tarball)
        return version

    def current(self) -> str | None:
        try:
            return os.readlink(self.dir / "current")
        except FileNotFoundError:
            return None

    def current_version(self) -> str | None:
        link = self.current()
        return None if link is None else link.split("/")[-1].split("-", 1)[0]

    def kept(self) -> list[str]:
        return sorted(p.name for p in (self.dir / "releases").iterdir())

    def report(self) -> dict[str, Any]:
        proc = self.site.cli("releases", "-c", str(self.site.daemon_conf), "--json")
        assert proc.returncode == 0, proc.stderr
        rows = json.loads(proc.stdout)
        assert len(rows) == 1
        return rows[0]  # type: ignore[no-any-return]

    def hook_lines(self) -> list[list[str]]:
        if not self.hooks.exists():
            return []
        return [line.split() for line in self.hooks.read_text().splitlines()]

    def leftovers(self) -> list[str]:
        """Temp files or directories an interrupted step could leave."""
        found = [p.name for p in (self.dir / ".distsync" / "tmp").iterdir()]
        found += [p.name for p in self.dir.iterdir() if p.name.startswith(".current.")]
        found += [
            p.name for p in (self.dir / ".distsync" / "incoming").iterdir()
            if p.name.endswith(".distsync-tmp")
        ]
        return found

    def assert_current_complete(self, version: str, files: int = 0) -> None:
        link = self.current()
        assert link is not None and link.startswith(f"releases/{version}-"), link
        release = self.dir / link
        assert (release / "VERSION").read_text().startswith("v")
        assert (release / "bin" / "app").stat().st_mode & 0o100
        if files:
            assert len(list((release / "static").iterdir())) == files


@pytest.fixture
def rel(tmp_path: Path) -> Iterator[Releases]:
    local = Site.create(tmp_path)
    try:
        yield Releases(local)
    finally:
        local.close()


def test_health_gated_releases_revert_and_keep(rel: Releases) -> None:
    daemon = rel.site.start_daemon()
    v1 = rel.upload(1)
    wait_for(lambda: rel.current_version() == v1, "v1 to become current", timeout=60)
    daemon.wait_log(rf"app-1\.tar\.gz version {v1} is current and healthy")
    rel.assert_current_complete(v1)

    v2 = rel.upload(2, healthy=False)
    switched = daemon.wait_log(rf"current -> releases/{v2}-app-2\.tar\.gz", timeout=60)
    assert switched
    t_switch = time.monotonic()
    daemon.wait_log(
        rf"app-2\.tar\.gz version {v2} failed: HealthCheck exited 1 .*current back to version {v1}",
        timeout=HEALTH_TIMEOUT + 30,
    )
    # Back within HealthTimeout (plus one last attempt and the test's own polling).
    assert time.monotonic() - t_switch < HEALTH_TIMEOUT + 10
    assert rel.current_version() == v1
    rel.assert_current_complete(v1)
    report = rel.report()
    assert report["current"] == v1
    failed = {r["version"]: r for r in report["releases"] if r["failed"]}
    assert set(failed) == {v2} and "HealthCheck exited 1" in failed[v2]["reason"]
    last = report["last"]
    assert (last["version"], last["healthy"], last["current"]) == (v2, False, v1)

    # The server's status record says so too: `upload --wait` for v2 ends with exit 6.
    def status_says_failed() -> str | None:
        shown = rel.site.cli("status", "-c", str(rel.site.upload_conf), "--json", "app-2.tar.gz")
        (item,) = json.loads(shown.stdout)["artifacts"] or [{"failed": {}}]
        return next(iter(item["failed"].values()), None)

    assert "HealthCheck exited 1" in wait_for(status_says_failed, "a status record", 30, 0.2)

    # Not retried: several more polls, still one activation of v2.
    polls = daemon.log().count("activating")
    time.sleep(3)
    assert daemon.log().count(f"activating app-2.tar.gz version {v2}") == 1
    assert daemon.log().count("activating") == polls
    assert rel.current_version() == v1

    v3 = rel.upload(3)
    wait_for(lambda: rel.current_version() == v3, "v3 to become current", timeout=60)
    daemon.wait_log(rf"app-3\.tar\.gz version {v3} is current and healthy")
    rel.assert_current_complete(v3)
    # Keep = 2: the current release and the one a rollback would go to; the failed v2 went.
    daemon.wait_log(rf"removed release {v2} ")
    assert rel.kept() == sorted([f"{v1}-app-1.tar.gz", f"{v3}-app-3.tar.gz"])
    assert rel.leftovers() == []

    # The hooks ran in order, in the release directory, with the documented environment.
    release = lambda v, n: str(rel.dir / "releases" / f"{v}-app-{n}.tar.gz")  # noqa: E731
    lines = rel.hook_lines()
    assert [(line[0], line[1]) for line in lines] == [
        ("pre", v1), ("post", v1), ("pre", v2), ("post", v1), ("pre", v3), ("post", v3),
    ]
    pre1, _post1, pre2, revert, _pre3, post3 = lines
    assert pre1[2:5] == ["app-1.tar.gz", release(v1, 1), "-"] and pre1[6] == release(v1, 1)
    assert pre2[2:5] == ["app-2.tar.gz", release(v2, 2), release(v1, 1)]
    # After the revert PostActivate runs for v1, whose predecessor was the failed v2.
    assert revert[2:5] == ["app-1.tar.gz", release(v1, 1), release(v2, 2)]
    assert post3[2:5] == ["app-3.tar.gz", release(v3, 3), release(v1, 1)]
    assert len(post3[5]) == 64
    # Nothing of the release path reached OutputDir.
    assert not rel.site.out.exists() or list(rel.site.out.iterdir()) == []
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.log()


HOSTILE = {
    "dotdot": "'..' component",
    "absolute": "is absolute",
    "symlink_to_etc": "is absolute",
    "hard_link_out": "is absolute",
    "device": "is a device",
    "setuid": "setuid",
}


def hostile_tarball(path: Path, kind: str, outside: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:

        def member(name: str, kind: bytes = tarfile.REGTYPE, **attrs: Any) -> None:
            info = tarfile.TarInfo(name)
            info.type = kind
            data = attrs.pop("data", b"pwned\n" if kind == tarfile.REGTYPE else b"")
            info.size = len(data)
            for key, value in attrs.items():
                setattr(info, key, value)
            tar.addfile(info, io.BytesIO(data) if data else None)

        member("VERSION", data=b"evil")
        member("health", data=b"ok\n")
        if kind == "dotdot":
            member("../../dotdot-evil")
        elif kind == "absolute":
            member(str(outside / "absolute-evil"))
        elif kind == "symlink_to_etc":
            member("etc", tarfile.SYMTYPE, linkname="/etc")
            member("etc/distsync-evil")
        elif kind == "hard_link_out":
            member("passwd", tarfile.LNKTYPE, linkname="/etc/passwd")
        elif kind == "device":
            member("null", tarfile.CHRTYPE, devmajor=1, devminor=3)
        elif kind == "setuid":
            member("bin/su", mode=0o4755)
    return path


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_hostile_tarballs_are_rejected_and_nothing_is_written_outside(rel: Releases) -> None:
    v1 = rel.upload(1)
    proc = rel.site.once()
    assert proc.returncode == 0, proc.stderr.decode()
    rel.assert_current_complete(v1)
    outside = rel.site.root / "outside"
    outside.mkdir()
    etc_before = set(os.listdir("/etc"))
    number = 1
    for kind, words in HOSTILE.items():
        number += 1
        tarball = hostile_tarball(rel.builds / f"app-{number}.tar.gz", kind, outside)
        version, _sha = rel.site.upload(tarball)
        before = snapshot(rel.site.root)
        proc = rel.site.once()
        log = proc.stderr.decode()
        assert proc.returncode == 1, f"{kind}: {log}"
        assert f"app-{number}.tar.gz version {version} rejected" in log and words in log, log
        assert "Traceback" not in log
        # Nothing outside the release directory, nothing left inside it either.
        after = snapshot(rel.site.root)
        new = {p for p in after - before if not p.startswith(("state/", "app/.distsync/"))}
        assert new == set(), f"{kind}: {new}"
        assert list(outside.iterdir()) == []
        assert rel.leftovers() == []
        assert rel.current_version() == v1, kind
        assert rel.kept() == [f"{v1}-app-1.tar.gz"]
        report = rel.report()
        failed = {r["version"]: r["reason"] for r in report["releases"] if r["failed"]}
        assert words in failed[version], failed
    assert set(os.listdir("/etc")) == etc_before
    assert not (rel.site.root.parent / "dotdot-evil").exists()
    # Rejected versions are not tried again.
    proc = rel.site.once()
    assert proc.returncode == 0 and "rejected" not in proc.stderr.decode()


def wait_for_unpack(rel: Releases, daemon: Any, version: str) -> Path:
    """A temp directory of ``version`` with some of its files written."""

    def partial() -> Path | None:
        if not daemon.alive():
            raise AssertionError(f"daemon exited early:\n{daemon.log()}")
        for temp in (rel.dir / ".distsync" / "tmp").glob(f"{version}-app-*"):
            static = temp / "static"
            if static.is_dir() and len(os.listdir(static)) > 50:
                return temp
        return None

    return wait_for(partial, "the unpack to be under way", timeout=90, interval=0.005)


def test_kill_9_during_unpack_leaves_current_complete(rel: Releases) -> None:
    files = 6000
    v1 = rel.upload(1)
    assert rel.site.once().returncode == 0
    v2 = rel.upload(2, files=files)
    daemon = rel.site.start_daemon()
    temp = wait_for_unpack(rel, daemon, v2)
    daemon.proc.kill()
    assert daemon.proc.wait(timeout=10) == -signal.SIGKILL
    assert temp.exists(), "killed after the unpack finished: make the release bigger"
    rel.assert_current_complete(v1)
    assert rel.kept() == [f"{v1}-app-1.tar.gz"]

    again = rel.site.start_daemon()
    again.wait_log(r"removed .*left by an interrupted release step", timeout=30)
    wait_for(lambda: rel.current_version() == v2, "v2 after the restart", timeout=120)
    again.wait_log(rf"app-2\.tar\.gz version {v2} is current and healthy", timeout=60)
    rel.assert_current_complete(v2, files=files)
    assert rel.leftovers() == []
    # The archive downloaded before the kill was whole: it is unpacked again, not refetched.
    assert again.stop() == 0


def test_kill_9_around_the_switch_and_during_the_health_check(rel: Releases) -> None:
    """Killed just before the switch (PreActivate running), then just after it (HealthCheck
    running): every time ``current`` is a complete release, and the restarted daemon finishes
    the activation, health check included."""
    gate = rel.site.root / "healthy-allowed"
    gate.touch()
    marks = rel.site.root / "marks"
    marks.mkdir()
    stall = (
        "import os, sys, time; open(os.path.join(sys.argv[1], sys.argv[2] + '-'"
        " + os.environ['DISTSYNC_VERSION']), 'a').close(); "
    )
    rel.site.update_daemon_conf(
        Release=[
            {
                "Match": "app-*.tar.gz",
                "Dir": str(rel.dir),
                "HealthTimeout": 120,
                # Slow enough to be killed inside, quick when not.
                "PreActivate": [sys.executable, "-c", stall + "time.sleep(2)", str(marks), "pre"],
                "HealthCheck": [
                    sys.executable,
                    "-c",
                    stall + "sys.exit(not os.path.exists(sys.argv[3]))",
                    str(marks),
                    "health",
                    str(gate),
                ],
            }
        ]
    )
    v1 = rel.upload(1)
    assert rel.site.once().returncode == 0
    rel.assert_current_complete(v1)
    gate.unlink()

    v2 = rel.upload(2)
    daemon = rel.site.start_daemon()
    wait_for(lambda: (marks / f"pre-{v2}").exists(), "PreActivate of v2", timeout=60)
    daemon.proc.kill()  # before the switch
    assert daemon.proc.wait(timeout=10) == -signal.SIGKILL
    rel.assert_current_complete(v1)

    daemon = rel.site.start_daemon()
    wait_for(lambda: (marks / f"health-{v2}").exists(), "the health check of v2", timeout=60)
    daemon.proc.kill()  # after the switch, before the health check passed
    assert daemon.proc.wait(timeout=10) == -signal.SIGKILL
    rel.assert_current_complete(v2)
    assert json.loads((rel.dir / ".distsync" / "state.json").read_text())["activating"]

    gate.touch()
    daemon = rel.site.start_daemon()
    daemon.wait_log(rf"checking app-2\.tar\.gz version {v2} again", timeout=30)
    daemon.wait_log(rf"app-2\.tar\.gz version {v2} is current and healthy", timeout=60)
    rel.assert_current_complete(v2)
    assert rel.leftovers() == []
    assert rel.report()["activating"] is None
    assert daemon.stop() == 0


def test_rollback_and_resume_while_the_daemon_runs(rel: Releases) -> None:
    conf = str(rel.site.daemon_conf)
    # Before any daemon ran there is nothing to hand the request to.
    refused = rel.site.cli("rollback", "-c", conf, "app-*.tar.gz")
    assert refused.returncode == 2 and b"no distsync daemon has managed" in refused.stderr

    daemon = rel.site.start_daemon()
    v1 = rel.upload(1)
    wait_for(lambda: rel.current_version() == v1, "v1", timeout=60)
    v2 = rel.upload(2)
    wait_for(lambda: rel.current_version() == v2, "v2", timeout=60)
    daemon.wait_log(rf"app-2\.tar\.gz version {v2} is current and healthy")

    # NAME may be an artifact name the release takes; the command waits for the daemon.
    proc = rel.site.cli("rollback", "-c", conf, "app-2.tar.gz", "--json")
    assert proc.returncode == 0, proc.stderr
    assert rel.current_version() == v1  # already switched when the command returns
    row = json.loads(proc.stdout)[0]
    assert (row["current"], row["held"], row["held_by"]) == (v1, v1, "operator")
    assert f"current is version {v1}, held" in proc.stderr.decode()

    nothing_older = rel.site.cli("rollback", "-c", conf, "app-*.tar.gz")
    assert nothing_older.returncode == 2
    assert b"no earlier release is kept" in nothing_older.stderr
    unknown = rel.site.cli("rollback", "-c", conf, "app-*.tar.gz", "--to", "999")
    assert unknown.returncode == 2 and b"not a known version" in unknown.stderr

    # A newer upload is held back, not installed.
    v3 = rel.upload(3)
    daemon.wait_log(rf"app-3\.tar\.gz version {v3} held back: release app-\*\.tar\.gz is held")
    time.sleep(1)
    assert rel.current_version() == v1

    proc = rel.site.cli("resume", "-c", conf, str(rel.dir))
    assert proc.returncode == 0, proc.stderr
    wait_for(lambda: rel.current_version() == v3, "v3 after resume", timeout=60)
    daemon.wait_log(rf"app-3\.tar\.gz version {v3} is current and healthy")
    assert rel.report()["held"] is None

    # --to a version that is no longer kept (Keep = 2): fetched again from the store.
    assert f"{v1}-app-1.tar.gz" not in rel.kept()
    proc = rel.site.cli("rollback", "-c", conf, "app-*.tar.gz", "--to", v1)
    assert proc.returncode == 0, proc.stderr
    assert b"fetching it from the store" in proc.stderr
    wait_for(lambda: rel.current_version() == v1, "v1 fetched again", timeout=60)
    assert rel.report()["held"] == v1

    # A request made while no daemon runs waits for the next start.
    assert daemon.stop() == 0
    proc = rel.site.cli("resume", "-c", conf, "app-*.tar.gz")
    assert proc.returncode == 0 and b"queued" in proc.stderr
    again = rel.site.start_daemon()
    wait_for(lambda: rel.current_version() == v3, "v3 after the queued resume", timeout=60)
    assert rel.report()["held"] is None
    assert again.stop() == 0
    for d in rel.site.daemons:
        assert "Traceback" not in d.log()


def test_a_pin_holds_a_release(rel: Releases) -> None:
    v1 = rel.upload(1)
    v2 = rel.upload(2)
    rel.site.update_daemon_conf(Pin={"app-1.tar.gz": v1})
    assert rel.site.once().returncode == 0
    assert rel.current_version() == v1
    assert rel.report()["held_by"] == "pin"
    rel.site.update_daemon_conf(Pin=None)
    assert rel.site.once().returncode == 0
    assert rel.current_version() == v2


def test_a_release_added_to_a_running_fleet_finds_the_versions_already_uploaded(
    tmp_path: Path,
) -> None:
    """The daemon's cursor is past the existing uploads: the new release lists the log once."""
    local = Site.create(tmp_path)
    try:
        builds = tmp_path / "builds"
        builds.mkdir()
        version, _sha = local.upload(app_tarball(builds / "app-1.tar.gz", "v1"))
        first = local.once()
        assert first.returncode == 0, first.stderr
        assert (local.out / "app-1.tar.gz").is_file()  # no [[Release]] yet: a plain install
        rel = Releases(local)
        second = local.once()
        assert second.returncode == 0, second.stderr
        assert rel.current_version() == version
        rel.assert_current_complete(version)
        again = local.once()  # listed once, not at every cycle
        assert again.returncode == 0 and "activating" not in again.stderr.decode()
    finally:
        local.close()
