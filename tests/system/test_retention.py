"""Issue 17 end to end on ``Storage = "Local"``: ``prune``, ``list --all``, ``upload --keep``,
``prune --orphans``, and real daemons facing a version whose content was pruned. Every
command is a real ``distsync`` process; the fleet's status records come from real daemons.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# tests/system is on sys.path (pytest's default "prepend" import mode, no __init__.py).
from faultproxy import Fault, FaultProxy
from s3server import Bucket
from test_local_flow import PART_SUFFIX, TEMP_SUFFIX, Daemon, Site, make_file
from test_s3_flow import config_text

APP = "retained-app-31f.tar.gz"
OTHER = "retained-other-31f.bin"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    site = Site.create(tmp_path)
    try:
        yield site
    finally:
        site.close()


def upload_versions(site: Site, count: int) -> list[str]:
    versions = []
    for n in range(count):
        path = make_file(site.root / APP, f"build {n} ".encode() * (1000 + n))
        versions.append(site.upload(path)[0])
    return versions


def listed(site: Site, *extra: str) -> list[dict[str, object]]:
    proc = site.cli("list", "-c", str(site.upload_conf), "--json", *extra)
    assert proc.returncode == 0, proc.stderr
    rows: list[dict[str, object]] = json.loads(proc.stdout)
    return rows


def prune(site: Site, *args: str) -> tuple[int, str, str]:
    proc = site.cli("prune", "-c", str(site.upload_conf), *args)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def objects_dir(site: Site) -> Path:
    return site.bucket / "distsync" / "v3" / "objects"


def contents(site: Site) -> set[str]:
    return {p.name for p in site.objects()}


def test_prune_keeps_the_newest_n_of_each_name_and_list_agrees(site: Site) -> None:
    app = upload_versions(site, 5)
    (other,) = [site.upload(make_file(site.root / OTHER, b"other" * 999))[0]]
    assert len(contents(site)) == 6

    code, out, err = prune(site, "--keep", "2", "--dry-run")
    assert code == 0, err
    assert len(contents(site)) == 6  # nothing deleted
    for seq in app[:3]:
        assert re.search(rf"^would delete {re.escape(APP)} version {seq} \(\d", out, re.M), out
    assert "total: would delete" in out and f"version {other}" not in out
    code, out_json, err = prune(site, "--keep", "2", "--dry-run", "--json")
    report = json.loads(out_json)
    assert [row["version"] for row in report["deleted"]] == app[:3][::-1]
    assert report["bytes"] == sum(row["stored_bytes"] for row in report["deleted"]) > 0
    assert len(contents(site)) == 6

    code, out, err = prune(site, "--keep", "2")
    assert code == 0, err
    assert len(contents(site)) == 3  # two of APP, OTHER's only one
    assert re.search(rf"^deleted {re.escape(APP)} version {app[0]} ", out, re.M), out
    visible = listed(site)
    assert [(r["name"], r["version"]) for r in visible] == [
        (OTHER, other),
        (APP, app[4]),
        (APP, app[3]),
    ]
    everything = listed(site, "--all")
    assert {r["version"]: r["pruned"] for r in everything} == {
        **{seq: True for seq in app[:3]},
        app[3]: False,
        app[4]: False,
        other: False,
    }
    table = site.cli("list", "-c", str(site.upload_conf), "--all").stdout.decode()
    assert re.search(rf"{re.escape(APP)}\s+{app[0]}\s.*\(pruned\)$", table, re.M), table

    # A second run finds nothing more to do; a pruned version cannot be downloaded.
    code, out, err = prune(site, "--keep", "2")
    assert code == 0 and out.strip() == "total: deleted 0 B (0 bytes)", out + err
    down = site.cli(
        "download", "-c", str(site.upload_conf), APP, "--version", app[0], "-o", str(site.root)
    )
    assert down.returncode == 4
    assert down.stderr.decode().strip().endswith(
        f"version {app[0]} of {APP} was pruned from the store (its content is gone)"
    )


def test_prune_by_name_and_age_and_bad_arguments(site: Site) -> None:
    app = upload_versions(site, 3)
    site.upload(make_file(site.root / OTHER, b"o1"))
    site.upload(make_file(site.root / OTHER, b"o2"))
    # Everything is younger than a day: --older-than keeps it all.
    code, out, err = prune(site, "--keep", "1", "--older-than", "1d")
    assert code == 0 and len(contents(site)) == 5, out + err
    code, out, err = prune(site, APP, "--keep", "1")
    assert code == 0, err
    assert len(contents(site)) == 3  # APP's newest, both of OTHER
    assert [r["version"] for r in listed(site, APP)] == [app[2]]
    for bad, message in (
        (["--keep", "0"], "--keep must be at least 1"),
        (["--keep", "1", "--older-than", "soon"], "is not a duration"),
        ([], "prune needs --keep N, --orphans, or both"),
        (["nope-31f.bin", "--keep", "1"], "no artifact named 'nope-31f.bin'"),
    ):
        code, out, err = prune(site, *bad)
        assert code == 2 and err.count("\n") == 1 and message in err, err


def test_a_version_a_server_has_installed_or_pinned_is_kept(site: Site) -> None:
    app = upload_versions(site, 4)
    # One server installs the newest; another is pinned to the oldest. Both report it in
    # their status records (a --once run writes one and leaves it unexpired).
    installer = site.sibling(site.root / "srv-one")
    installer.update_daemon_conf(NodeName="srv-one-31f", Pin={APP: app[1]})
    assert installer.once().returncode == 0
    pinned = site.sibling(site.root / "srv-two")
    pinned.update_daemon_conf(NodeName="srv-two-31f", Pin={APP: app[0]})
    assert pinned.once().returncode == 0

    code, out, err = prune(site, "--keep", "1")
    assert code == 0, err
    assert f"kept {APP} version {app[0]}: installed on srv-two-31f, pinned on srv-two-31f" in out
    assert f"kept {APP} version {app[1]}: installed on srv-one-31f, pinned on srv-one-31f" in out
    assert re.search(rf"^deleted {re.escape(APP)} version {app[2]} ", out, re.M), out
    assert [r["version"] for r in listed(site)] == [app[3], app[1], app[0]]


def test_a_daemon_pinned_to_a_pruned_version_fails_once_with_one_line(site: Site) -> None:
    app = upload_versions(site, 3)
    code, _out, err = prune(site, "--keep", "1")
    assert code == 0, err
    site.update_daemon_conf(NodeName="srv-pinned-31f", Pin={APP: app[0]})
    proc = site.once()
    assert proc.returncode == 1
    log = proc.stderr.decode()
    assert "Traceback" not in log
    gone = f"version {app[0]} of {APP} was pruned from the store"
    assert len([line for line in log.splitlines() if gone in line]) == 1, log
    assert not (site.out / APP).exists()
    assert not [p for p in site.out.iterdir() if p.name.endswith((TEMP_SUFFIX, PART_SUFFIX))]
    status = site.cli("status", "-c", str(site.upload_conf), "--json")
    assert gone in status.stdout.decode(), status.stdout.decode()


def test_upload_keep_prunes_that_name_after_the_upload(site: Site) -> None:
    site.upload(make_file(site.root / OTHER, b"o1"))
    site.upload(make_file(site.root / OTHER, b"o2"))
    upload_versions(site, 2)
    path = make_file(site.root / APP, b"newest build")
    proc = site.cli("upload", "-c", str(site.upload_conf), str(path), "--keep", "1")
    assert proc.returncode == 0, proc.stderr
    newest = re.match(r"\S+\tversion (\d+)\t", proc.stdout.decode())
    assert newest is not None
    assert [r["version"] for r in listed(site, APP)] == [newest[1]]
    assert len(listed(site, OTHER)) == 2  # another name is not touched
    assert proc.stderr.decode().count("pruned") == 2, proc.stderr


def test_prune_orphans_removes_only_old_unreferenced_contents(site: Site) -> None:
    (app,) = upload_versions(site, 1)
    objects = objects_dir(site)
    # What an upload whose log claim failed leaves: a content no entry names.
    old = make_file(objects / ("0" * 32), b"an orphan from yesterday")
    young = make_file(objects / ("1" * 32), b"an upload still under way")
    day_ago = time.time() - 25 * 3600
    os.utime(old, (day_ago, day_ago))

    code, out, err = prune(site, "--orphans", "--dry-run")
    assert code == 0 and old.exists(), err
    assert f"would delete orphaned content distsync/v3/objects/{old.name}" in out
    code, out, err = prune(site, "--orphans")
    assert code == 0, err
    assert not old.exists() and young.exists()
    assert "left 1 unreferenced contents younger than 24h alone" in out
    assert [r["version"] for r in listed(site)] == [app]  # the genuine content stays
    code, out, err = prune(site, "--orphans", "--orphan-age", "0s")
    assert code == 0 and not young.exists(), err
    assert [r["version"] for r in listed(site)] == [app]


def test_a_real_uploads_content_whose_entry_is_gone_is_an_orphan(site: Site) -> None:
    """The state a lost log claim leaves: a real upload's content, no entry naming it."""
    first, _sha = site.upload(make_file(site.root / APP, b"kept"))
    before = contents(site)
    lost, _sha = site.upload(make_file(site.root / APP, b"claim lost"))
    (orphan,) = contents(site) - before
    (site.log_dir() / f"{int(lost):020d}").unlink()
    day_ago = time.time() - 2 * 86400
    os.utime(objects_dir(site) / orphan, (day_ago, day_ago))
    code, out, err = prune(site, "--orphans", "--json")
    assert code == 0, err
    assert [o["key"] for o in json.loads(out)["orphans"]] == [f"distsync/v3/objects/{orphan}"]
    assert contents(site) == before
    assert [r["version"] for r in listed(site)] == [first]


def test_orphans_are_not_guessed_while_a_log_entry_fails_verification(site: Site) -> None:
    site.upload(make_file(site.root / APP, b"genuine"))
    old = make_file(objects_dir(site) / ("2" * 32), b"unreferenced")
    os.utime(old, (0, 0))
    # An entry that does not verify may name that content (a tamper can be undone).
    (site.log_dir() / f"{7:020d}").write_bytes(b"not a manifest")
    code, out, err = prune(site, "--orphans")
    assert code == 4 and old.exists(), out + err
    assert err.count("\n") == 1 and "1 log entries fail verification (first 7)" in err


def test_a_running_daemon_says_it_once_and_backs_off(site: Site) -> None:
    app = upload_versions(site, 2)
    assert prune(site, "--keep", "1")[0] == 0
    site.update_daemon_conf(Pin={APP: app[0]})
    log_path = site.root / "debug-daemon.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "distsync", "--debug", "daemon", "-c", str(site.daemon_conf)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=site.env(),
            start_new_session=True,
        )  # fmt: skip
    daemon = Daemon(proc, log_path)
    site.daemons.append(daemon)
    # Tries after 1, 2, 4 poll intervals (0.2 s each): the third try is the fourth debug line.
    daemon.wait_log(r"(?s)(next try in .*){4}", timeout=60)
    assert daemon.stop() == 0
    text = daemon.log()
    gone = f"version {app[0]} of {APP} was pruned from the store"
    errors = [line for line in text.splitlines() if gone in line and " ERROR " in line]
    assert len(errors) == 1, text
    assert "Traceback" not in text
    waits = [float(w) for w in re.findall(r"next try in ([0-9.]+) s", text)]
    assert waits[:4] == sorted(waits[:4]) and waits[3] >= 4 * waits[0], waits
    assert not (site.out / APP).exists()


def test_a_status_record_that_cannot_be_read_stops_the_prune(
    bucket: Bucket,
    fault_proxy: FaultProxy,
    tmp_path: Path,
    write_config: Callable[..., Path],
    run_cli: Callable[..., subprocess.CompletedProcess[bytes]],
) -> None:
    """On S3: the record that would protect a version answers 500, so nothing is deleted
    (``distsync status`` would pass over it; retention must not)."""
    direct = write_config(
        config_text(bucket.endpoint, bucket.name, tmp_path, daemon=False), "u.toml"
    )
    relayed = write_config(
        config_text(fault_proxy.endpoint, bucket.name, tmp_path, daemon=False), "p.toml"
    )
    artifact = tmp_path / APP
    for n in range(3):
        artifact.write_bytes(b"build %d" % n)
        assert run_cli("upload", "-c", str(direct), str(artifact)).returncode == 0
    pin = f'NodeName = "srv-s3-31f"\n[Pin]\n"{APP}" = "1"\n'
    daemon_text = config_text(bucket.endpoint, bucket.name, tmp_path, daemon=True)
    daemon = write_config(daemon_text.replace("[AwsCreds]", pin + "[AwsCreds]"), "d.toml")
    assert run_cli("daemon", "-c", str(daemon), "--once").returncode == 0
    fault_proxy.add(Fault("status", method="GET", path_contains="/status/", status=500, times=99))
    refused = run_cli("prune", "-c", str(relayed), "--keep", "1")
    err = refused.stderr.decode()
    (line,) = [line for line in err.splitlines() if line.startswith("distsync: error:")]
    assert refused.returncode == 4 and "Traceback" not in err, err
    assert "cannot read status record" in line and "nothing was deleted" in line
    assert len(json.loads(run_cli("list", "-c", str(direct), "--json").stdout)) == 3
    fault_proxy.clear()
    done = run_cli("prune", "-c", str(relayed), "--keep", "1")
    assert done.returncode == 0, done.stderr
    assert f"kept {APP} version 1: installed on srv-s3-31f, pinned on srv-s3-31f" in (
        done.stdout.decode()
    )
    rows = json.loads(run_cli("list", "-c", str(direct), "--json").stdout)
    assert [row["version"] for row in rows] == ["3", "1"]
