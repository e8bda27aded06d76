"""Issue 11, the log and the store's identity: one test per attack, python-tuf style.

The attacker has write access to the bucket but not the SharedSecret, so the most they may
achieve is denial of service, and only while the damage stands. Every command is a real
``distsync`` process; the tests that matter on both kinds of store run on a directory
(``Storage = "Local"``) and on S3 (a moto server, set up by ``distsync setup`` itself).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w
from adversary import PREFIX, AnySite, log_key
from distsync.crypto.secret import generate_secret
from s3server import MotoServer
from test_local_flow import RETRY_DUE, installs, make_file, sha256_file, tomllib

MAX_SEQ = 10**20 - 1


@pytest.fixture(params=["local", "s3"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AnySite]:
    if request.param == "local":
        made = AnySite.local(tmp_path)
    else:
        made = AnySite.s3(tmp_path, request.getfixturevalue("moto_server"))
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def local_site(tmp_path: Path) -> Iterator[AnySite]:
    made = AnySite.local(tmp_path)
    try:
        yield made
    finally:
        made.close()


def listed_versions(site: AnySite) -> list[str]:
    proc = site.cli("list", "-c", str(site.upload_conf), "--json")
    assert proc.returncode == 0, proc.stderr
    return [row["version"] for row in json.loads(proc.stdout)]


# -- the log and the daemon's cursor -------------------------------------------------------


def test_junk_log_entry_does_not_strand_later_uploads(site: AnySite) -> None:
    src = site.root / "app.bin"
    site.upload(make_file(src, b"release 1\n"))
    assert site.once().returncode == 0

    site.store.put(log_key(99999), b"junk")
    proc = site.once()
    assert "ignoring log entry 99999" in proc.stderr.decode(), proc.stderr
    site.store.delete(log_key(99999))

    v2, sha2 = site.upload(make_file(src, b"release 2\n"))
    assert v2 == "2"  # below the junk's number, now that it is gone
    proc = site.once()
    log = proc.stderr.decode()
    assert proc.returncode == 0, log
    assert [d["version"] for d in installs(log)] == ["2"], log
    assert sha256_file(site.out / "app.bin") == sha2


def test_forged_marker_hint_cannot_make_an_upload_invisible(site: AnySite) -> None:
    site.forge_marker(MAX_SEQ)  # the next number would need 21 digits
    v1, sha1 = site.upload(make_file(site.root / "app.bin", b"release 1\n"))
    assert v1 == "1"
    assert all(len(key.rsplit("/", 1)[1]) == 20 for key in site.store.keys(PREFIX + "log/"))
    assert listed_versions(site) == ["1"]
    proc = site.once()
    assert proc.returncode == 0, proc.stderr
    assert sha256_file(site.out / "app.bin") == sha1


def test_junk_at_the_largest_sequence_number_refuses_uploads_clearly(local_site: AnySite) -> None:
    site = local_site
    site.store.put(log_key(MAX_SEQ), b"junk")
    src = make_file(site.root / "app.bin", b"release 1\n")
    proc = site.cli("upload", "-c", str(site.upload_conf), str(src))
    assert proc.returncode == 4, proc.stderr
    assert b"no log sequence number is free" in proc.stderr
    assert site.log_seqs() == [MAX_SEQ]  # no invisible 21-digit key was claimed

    site.store.delete(log_key(MAX_SEQ))  # the damage undone: uploads work again
    assert site.upload(src)[0] == "1"


def test_transient_tamper_of_a_log_entry_is_installed_once_restored(site: AnySite) -> None:
    src = site.root / "app.bin"
    site.upload(make_file(src, b"release 1\n"))
    assert site.once().returncode == 0
    v2, sha2 = site.upload(make_file(src, b"release 2\n"))
    original = site.flip_byte(log_key(2))

    proc = site.once()
    log = proc.stderr.decode()
    assert "ignoring log entry 2" in log and installs(log) == [], log
    assert (site.out / "app.bin").read_bytes() == b"release 1\n"

    site.store.put(log_key(2), original)
    time.sleep(RETRY_DUE)  # the entry's first retry is due
    proc = site.once()
    log = proc.stderr.decode()
    assert proc.returncode == 0, log
    assert [d["version"] for d in installs(log)] == [v2], log
    assert "log entry 2 verifies now" in log, log
    assert sha256_file(site.out / "app.bin") == sha2


def test_transient_tamper_of_an_object_is_installed_once_restored(local_site: AnySite) -> None:
    """A running daemon retries with backoff and says when the version finally verifies."""
    site = local_site
    _v1, _ = site.upload(make_file(site.root / "app.bin", b"release 1\n"))
    assert site.once().returncode == 0
    objects = set(site.store.keys(PREFIX + "objects/"))
    v2, sha2 = site.upload(make_file(site.root / "app.bin", b"release 2\n" * 1000))
    (key,) = set(site.store.keys(PREFIX + "objects/")) - objects
    original = site.flip_byte(key)

    daemon = site.start_daemon()
    daemon.wait_log(rf"ERROR rejected app\.bin version {v2}: ")
    site.store.put(key, original)
    daemon.wait_log(rf"app\.bin version {v2} verifies now, after \d+ failed tries")
    daemon.wait_log(rf"installed app\.bin version {v2} ")
    assert daemon.stop() == 0
    assert sha256_file(site.out / "app.bin") == sha2


# -- the store record ------------------------------------------------------------------------


def _with_other_secret(site: AnySite, path: Path) -> Path:
    values = tomllib.loads(path.read_text())
    values["SharedSecret"] = generate_secret()
    other = path.with_name("other-" + path.name)
    other.write_text(tomli_w.dumps(values))
    other.chmod(0o600)
    return other


def test_wrong_secret_is_told_not_shown_an_empty_store(site: AnySite) -> None:
    src = make_file(site.root / "app.bin", b"release 1\n")
    site.upload(src)
    uploader = _with_other_secret(site, site.upload_conf)
    daemon_conf = _with_other_secret(site, site.daemon_conf)
    before = site.log_seqs()

    for args in (
        ("list", "-c", str(uploader)),
        ("download", "-c", str(uploader), "app.bin", "-o", str(site.root)),
        ("upload", "-c", str(uploader), str(src)),
        ("daemon", "--once", "-c", str(daemon_conf)),
        ("daemon", "-c", str(daemon_conf)),  # a long-running daemon exits too
    ):
        proc = site.cli(*args, timeout=60)
        errors = proc.stderr.decode()
        assert proc.returncode == 3, (args, errors)
        assert "this store was set up with a different SharedSecret" in errors, errors
    assert site.log_seqs() == before  # nothing was uploaded
    assert not (site.out / "app.bin").exists()


def test_store_recreated_at_the_same_place_is_followed(site: AnySite) -> None:
    src = site.root / "app.bin"
    site.upload(make_file(src, b"release 1\n"))
    site.upload(make_file(src, b"release 2\n"))
    same = make_file(site.root / "same.bin", b"the same in both stores\n")
    site.upload(same)
    assert site.once().returncode == 0
    installed_same = (site.out / "same.bin").stat()

    # The store is removed and set up again at the same place: a new secret, a new log.
    if site.endpoint is None:
        shutil.rmtree(site.bucket)
        proc = site.cli(
            "setup", "--storage", "local", "--bucket", str(site.bucket),
            "--output-dir", str(site.out), "--upload-config", str(site.upload_conf),
            "--daemon-config", str(site.daemon_conf), "--non-interactive", "--force",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        site.update_daemon_conf(PollInterval=0.2, PollJitter=0, StateDir=str(site.root / "state"))
    else:
        setup_id = site.store.bucket.removeprefix("distsync-")  # type: ignore[attr-defined]
        proc = site.cli(
            "setup", "--destroy", setup_id, "--delete-bucket", "--endpoint", site.endpoint,
            "--non-interactive",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        site.setup_s3(setup_id, "--force")
    v1, sha1 = site.upload(make_file(src, b"release 1 of the new store\n"))
    assert v1 == "1"
    site.upload(same)

    proc = site.once()
    log = proc.stderr.decode()
    assert proc.returncode == 0, log
    assert [(d["name"], d["version"]) for d in installs(log)] == [("app.bin", "1")], log
    assert "is a new store" in log, log
    assert sha256_file(site.out / "app.bin") == sha1
    # Content already in place is recognized by its SHA-256, not fetched again.
    assert re.search(r"same\.bin version 2 has the content already installed", log), log
    assert (site.out / "same.bin").stat().st_ino == installed_same.st_ino


def test_switching_between_s3_and_s3_bittorrent_installs_nothing_again(
    tmp_path: Path, moto_server: MotoServer
) -> None:
    site = AnySite.s3(tmp_path, moto_server)
    try:
        _v1, _ = site.upload(make_file(site.root / "app.bin", b"release 1\n" * 100))
        assert site.once().returncode == 0
        before = (site.out / "app.bin").stat()
        site.update_daemon_conf(Storage="S3+BitTorrent", TorrentPort=0)
        proc = site.once()
        log = proc.stderr.decode()
        assert proc.returncode == 0, log
        assert installs(log) == [], log
        assert (site.out / "app.bin").stat().st_ino == before.st_ino
    finally:
        site.close()


def test_store_without_a_record_keeps_working_with_a_warning(local_site: AnySite) -> None:
    site = local_site
    site.store.delete(PREFIX + "store")  # as a store set up by an older distsync
    _v1, sha1 = site.upload(make_file(site.root / "app.bin", b"release 1\n"))
    proc = site.cli("list", "-c", str(site.upload_conf))
    assert proc.returncode == 0, proc.stderr
    assert b"has no store record" in proc.stderr
    proc = site.once()
    assert proc.returncode == 0, proc.stderr
    assert b"has no store record" in proc.stderr
    assert sha256_file(site.out / "app.bin") == sha1


def test_a_removed_store_record_resets_nothing(local_site: AnySite) -> None:
    """Deleting the record (and the newest log entry) must not roll a daemon back."""
    site = local_site
    src = site.root / "app.bin"
    site.upload(make_file(src, b"release 1\n"))
    _v2, sha2 = site.upload(make_file(src, b"release 2\n"))
    assert site.once().returncode == 0
    site.store.delete(PREFIX + "store")
    site.store.delete(log_key(2))
    proc = site.once()
    log = proc.stderr.decode()
    assert installs(log) == [], log
    assert sha256_file(site.out / "app.bin") == sha2


def test_setup_never_replaces_an_existing_store_without_force(local_site: AnySite) -> None:
    """A second setup on the same directory would cut every config of the first one off."""
    site = local_site
    site.upload(make_file(site.root / "app.bin", b"release 1\n"))
    args = (
        "setup", "--storage", "local", "--bucket", str(site.bucket), "--non-interactive",
        "--upload-config", str(site.root / "second.toml"),
        "--daemon-config", str(site.root / "secondd.toml"),
    )  # fmt: skip
    proc = site.cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert b"already holds a distsync store" in proc.stderr and b"--force" in proc.stderr
    assert not (site.root / "second.toml").exists()
    assert site.cli("list", "-c", str(site.upload_conf)).returncode == 0

    assert site.cli(*args, "--force").returncode == 0
    proc = site.cli("list", "-c", str(site.upload_conf))
    assert proc.returncode == 3 and b"different SharedSecret" in proc.stderr
