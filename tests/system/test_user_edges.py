"""Issue 11, the user-visible edges: CI retries, half-done batches, exit codes, pins.

Every command is a real ``distsync`` process on a ``Storage = "Local"`` store.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from adversary import PREFIX, AnySite
from test_local_flow import installs, make_file


@pytest.fixture
def site(tmp_path: Path) -> Iterator[AnySite]:
    made = AnySite.local(tmp_path)
    try:
        yield made
    finally:
        made.close()


def versions(site: AnySite) -> list[str]:
    proc = site.cli("list", "-c", str(site.upload_conf), "--json")
    assert proc.returncode == 0, proc.stderr
    return [row["version"] for row in json.loads(proc.stdout)]


# -- uploads -------------------------------------------------------------------------------


def test_reupload_of_identical_content_is_skipped_and_says_so(site: AnySite) -> None:
    """A CI retry must not make a new version (and a fleet-wide reinstall)."""
    src = make_file(site.root / "app.bin", b"release 1\n")
    v1, sha1 = site.upload(src)
    proc = site.cli("upload", "-c", str(site.upload_conf), str(src))
    assert proc.returncode == 0, proc.stderr
    assert b"app.bin is unchanged: version 1 has the same content" in proc.stderr
    assert proc.stdout.decode() == f"app.bin\tversion {v1}\t10 bytes\tsha256 {sha1}\n"
    assert versions(site) == ["1"]

    v2, _ = site.upload(src, "--force")
    assert v2 == "2" and versions(site) == ["2", "1"]


def test_upload_checks_every_file_before_uploading_any(site: AnySite) -> None:
    good = make_file(site.root / "a.txt", b"a\n")
    for bad in (site.root / "nope.bin", site.root):  # missing; a directory
        proc = site.cli("upload", "-c", str(site.upload_conf), str(good), str(bad))
        assert proc.returncode == 5, proc.stderr
        assert str(bad).encode() in proc.stderr
        assert site.log_seqs() == [] and site.store.keys(PREFIX + "objects/") == []
    proc = site.cli("upload", "-c", str(site.upload_conf), str(good), "--name", ".bad")
    assert proc.returncode == 2 and site.log_seqs() == []


# -- the daemon never does the same work twice ------------------------------------------------


def test_daemon_never_reinstalls_or_reruns_the_hook_for_content_it_has(site: AnySite) -> None:
    marks = site.root / "hook-runs"
    site.update_daemon_conf(
        OnUpdate=["/bin/sh", "-c", f'echo "$DISTSYNC_VERSION" >> "{marks}"'], HookTimeout=60
    )
    src = make_file(site.root / "app.bin", b"release 1\n")
    site.upload(src)
    assert site.once().returncode == 0
    dest = site.out / "app.bin"
    before = dest.stat()
    assert marks.read_text() == "1\n"

    v2, _ = site.upload(src, "--force")  # the same content as a new version
    proc = site.once()
    log = proc.stderr.decode()
    assert proc.returncode == 0, log
    assert installs(log) == [], log
    assert f"app.bin version {v2} has the content already installed" in log
    assert marks.read_text() == "1\n", "the hook ran again"
    after = dest.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # The new version is recorded: nothing happens on the next run either.
    again = site.once()
    assert again.returncode == 0 and b"already installed" not in again.stderr


# -- exit codes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("gamma.tgz",),  # no such name
        ("app.bin", "--version", "abc"),  # not a version id
        ("app.bin", "--version", "1e3"),
        ("app.bin", "--version", "1" * 21),  # longer than any version id
        ("app.bin", "--version", "99"),  # no such version
    ],
)
def test_asking_for_what_is_not_there_is_a_usage_error(
    site: AnySite, args: tuple[str, ...]
) -> None:
    site.upload(make_file(site.root / "app.bin", b"release 1\n"))
    proc = site.cli("download", "-c", str(site.upload_conf), *args, "-o", str(site.root))
    errors = proc.stderr.decode().splitlines()
    assert proc.returncode == 2, errors
    assert len(errors) == 1 and errors[0].startswith("distsync: error: "), errors


# -- pins ---------------------------------------------------------------------------------------


def _two_names(site: AnySite) -> tuple[str, str, str]:
    """app.bin versions 1 and 3, other.bin version 2."""
    v1, _ = site.upload(make_file(site.root / "app.bin", b"app 1\n"))
    v2, _ = site.upload(make_file(site.root / "other.bin", b"other 1\n"))
    v3, _ = site.upload(make_file(site.root / "app.bin", b"app 2\n"))
    return v1, v2, v3


def test_pin_to_another_names_version_says_so(site: AnySite) -> None:
    _v1, v2, _v3 = _two_names(site)
    site.update_daemon_conf(Pin={"app.bin": v2})
    proc = site.once()
    log = proc.stderr.decode()
    assert proc.returncode == 0, log
    lines = [line for line in log.splitlines() if f"pin app.bin = {v2}" in line]
    assert len(lines) == 1, log
    assert "'other.bin', not 'app.bin'" in lines[0]
    assert not (site.out / "app.bin").exists()  # held: the pin names nothing to install


def test_pin_to_a_version_that_never_existed_says_so(site: AnySite) -> None:
    _two_names(site)
    site.update_daemon_conf(Pin={"app.bin": "77"})
    proc = site.once()
    log = proc.stderr.decode()
    # "version 77", "= 77": not a random hex node id that happens to start with 77.
    lines = [line for line in log.splitlines() if re.search(r"(?<![0-9a-f])77(?![0-9a-f])", line)]
    assert len(lines) == 1, log
    assert "pin app.bin = 77" in lines[0] and "never existed" in lines[0], log
    assert "no longer in the store" not in log


def test_pin_to_a_version_whose_object_was_removed_says_it_was_pruned(
    site: AnySite,
) -> None:
    objects = set(site.store.keys(PREFIX + "objects/"))
    v1, _ = site.upload(make_file(site.root / "app.bin", b"app 1\n"))
    (first,) = set(site.store.keys(PREFIX + "objects/")) - objects
    site.upload(make_file(site.root / "app.bin", b"app 2\n"))
    site.store.delete(first)
    site.update_daemon_conf(Pin={"app.bin": v1})
    proc = site.once()
    log = proc.stderr.decode()
    # Its log entry is genuine, its content gone: pruned (issue 17), said once.
    assert len(re.findall(rf"version {v1} of app\.bin was pruned from the store", log)) == 1, log
    assert "never existed" not in log


def test_newer_upload_held_back_by_a_pin_is_logged(site: AnySite) -> None:
    v1, _v2, _v3 = _two_names(site)
    site.update_daemon_conf(Pin={"app.bin": v1})
    daemon = site.start_daemon()
    daemon.wait_log(rf"installed app\.bin version {v1} ")
    daemon.wait_log(r"app\.bin version 3 is held back by the pin to version 1")
    v4, _ = site.upload(make_file(site.root / "app.bin", b"app 3\n"))
    daemon.wait_log(rf"app\.bin version {v4} is held back by the pin to version {v1}")
    assert daemon.stop() == 0
    held = [line for line in daemon.log().splitlines() if "held back" in line]
    assert len(held) == 2, held  # one line per version, not one per poll
    assert (site.out / "app.bin").read_bytes() == b"app 1\n"
