"""Concurrent uploads lose nothing, on every store the tests run (DESIGN §9, docs/FORMAT.md).

Each store is set up by the real ``distsync setup``, which probes its conditional create and
records the verdict: a directory, moto (``--no-iam``) and ministack (IAM users, enforced) get
the atomic log; native Swift and Swift's S3 API (whose 2.30 answers 501 to a conditional PUT)
get the log that needs no atomic create. Two ``distsync daemon`` processes follow each store
while, round after round, 2 to 4 ``distsync upload`` processes start at the same moment, each
uploading a file of its own and a new version of one shared name. Then:

- every upload printed a version, and ``distsync list`` has every one of them;
- every daemon installs every artifact, and the shared name's newest version on every one;
- versions of the shared name are strictly ordered, each round's after the last round's.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from distsync.catalog import Catalog
from distsync.config import load_config
from distsync.layout import Layout
from distsync.logorder import MAX_SEQ, parse_version_id, seq_of
from distsync.provision import aws_policies as aws
from distsync.storage import open_store
from distsync.upload import upload_file
from iamserver import IamServer, Keys
from racesite import Site, Upload
from s3server import ACCESS_KEY, SECRET_KEY, MotoServer
from swiftfleet import SwiftFleet
from swiftserver import ADMIN, SwiftServer

ROUNDS = 20
RACERS = (2, 3, 4)  # uploaders per round, in turn
DAEMONS = 2
SHARED = "shared.bin"


def _setup(site: Site, *args: str, env: dict[str, str]) -> None:
    home = site.tmp / "setup-home"
    home.mkdir(exist_ok=True)
    saved = dict(site.env)
    site.env = env
    try:
        result = site.cli(
            "setup",
            "--non-interactive",
            "--upload-config",
            str(site.uploader),
            "--daemon-config",
            str(site.daemon_template),
            "--output-dir",
            str(site.tmp / "unused-out"),
            *args,
        )
    finally:
        site.env = saved
    assert result.returncode == 0, f"{site.name}: setup failed: {result.stderr.decode()}"


def _site(name: str, tmp: Path) -> Site:
    tmp.mkdir(parents=True, exist_ok=True)
    return Site(name, tmp, tmp / "uploader.toml", tmp / "daemon.toml")


def local_site(tmp: Path) -> Site:
    site = _site("local", tmp)
    _setup(site, "--storage", "local", "--bucket", str(tmp / "bucket"), env={})
    return site


def moto_site(tmp: Path, moto: MotoServer) -> Site:
    site = _site("moto", tmp)
    keys = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    bucket = f"distsync-race-{uuid.uuid4().hex[:12]}"
    _setup(
        site,
        "--storage",
        "s3",
        "--no-iam",
        "--endpoint",
        moto.endpoint,
        "--bucket",
        bucket,
        env=keys,
    )
    return site


def ministack_site(tmp: Path, server: IamServer, admin: Keys) -> Site:
    site = _site("ministack", tmp)
    keys = {
        "AWS_ACCESS_KEY_ID": admin.access_key_id,
        "AWS_SECRET_ACCESS_KEY": admin.secret_access_key,
    }
    setup_id = "r" + uuid.uuid4().hex[:10]
    _setup(site, "--storage", "s3", "--endpoint", server.endpoint, "--setup-id", setup_id, env=keys)
    return site


def swift_site(tmp: Path, server: SwiftServer) -> Site:
    container = f"t-{uuid.uuid4().hex[:20]}"
    fleet = SwiftFleet(server, container, tmp)
    result = fleet.setup()
    assert result.returncode == 0, result.stderr.decode()
    return Site("swift", tmp, fleet.uploader, fleet.daemon)


def s3api_site(tmp: Path, server: SwiftServer) -> Site:
    """Swift's S3 API with ``Storage = "S3"``: setup has no IAM there (``--no-iam``)."""
    site = _site("swift-s3api", tmp)
    keys = {"AWS_ACCESS_KEY_ID": ADMIN.name, "AWS_SECRET_ACCESS_KEY": ADMIN.key}
    bucket = f"distsync-race-{uuid.uuid4().hex[:12]}"
    endpoint = server.endpoint
    _setup(
        site, "--storage", "s3", "--no-iam", "--endpoint", endpoint, "--bucket", bucket, env=keys
    )
    return site


@pytest.fixture(scope="module")
def ministack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamServer]:
    with IamServer(tmp_path_factory.mktemp("ministack")) as server:
        yield server


SITES: dict[str, tuple[bool, Callable[[pytest.FixtureRequest, Path], Site]]] = {
    # name: (the verdict setup must record, how to set the store up)
    "local": (True, lambda request, tmp: local_site(tmp)),
    "moto": (True, lambda request, tmp: moto_site(tmp, request.getfixturevalue("moto_server"))),
    "ministack": (
        True,
        lambda request, tmp: ministack_site(
            tmp,
            server := request.getfixturevalue("ministack"),
            server.user_with_policy(f"admin-{uuid.uuid4().hex[:8]}", aws.setup_admin_policy()),
        ),
    ),
    "swift": (False, lambda request, tmp: swift_site(tmp, request.getfixturevalue("swift_server"))),
    "swift-s3api": (
        False,
        lambda request, tmp: s3api_site(tmp, request.getfixturevalue("swift_server")),
    ),
}


def _files(tmp: Path, round_: int, racer: int) -> tuple[list[Path], dict[str, bytes]]:
    """An uploader's two files: one of its own name and a new version of the shared name."""
    where = tmp / "src" / f"r{round_:02d}-u{racer}"
    where.mkdir(parents=True)
    own = where / f"r{round_:02d}-u{racer}.bin"
    shared = where / SHARED
    contents = {own.name: os.urandom(3000 + racer), SHARED: os.urandom(2000 + round_)}
    own.write_bytes(contents[own.name])
    shared.write_bytes(contents[SHARED])
    return [own, shared], contents


# 20 rounds of real processes: 1-2.5 min per store on a loaded 2-core machine (Swift's s3api is
# the slowest), hence more than the default 300 s bound. Rounds run one after another because
# the test checks that each round's versions come after the previous round's.
@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("store", list(SITES))
def test_racing_uploads_lose_nothing(
    store: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    atomic, make = SITES[store]
    site = make(request, tmp_path / store)
    try:
        record = site.record()
        assert record is not None
        assert record.capability("atomic_create") is atomic, f"{store}: the probe's verdict"
        outputs = [site.start_daemon(n) for n in range(DAEMONS)]
        expected: dict[str, bytes] = {}
        own_versions: dict[str, str] = {}
        shared: list[tuple[int, Upload, bytes]] = []  # (round, what was printed, content)
        started = time.monotonic()
        for round_ in range(ROUNDS):
            racers = RACERS[round_ % len(RACERS)]
            batches, contents = [], []
            for racer in range(racers):
                files, content = _files(tmp_path / store, round_, racer)
                batches.append(files)
                contents.append(content)
            for printed, content in zip(site.race(batches), contents):
                assert [u.name for u in printed] == list(content), printed
                for upload in printed:
                    if upload.name == SHARED:
                        shared.append((round_, upload, content[SHARED]))
                    else:
                        expected[upload.name] = content[upload.name]
                        own_versions[upload.name] = upload.version
        race_seconds = time.monotonic() - started

        # Nothing lost: every version printed is in the log, and nothing else is.
        listed = json.loads(site.cli("list", "--json", "-c", str(site.uploader)).stdout)
        printed_versions = {(u.name, u.version) for _r, u, _c in shared}
        printed_versions |= set(own_versions.items())
        assert {(row["name"], row["version"]) for row in listed} == printed_versions
        assert len(listed) == len(own_versions) + len(shared)

        # Strictly ordered: distinct positions, and every round after the one before.
        positions = [(r, parse_version_id(u.version)) for r, u, _c in shared]
        assert len({p for _r, p in positions}) == len(shared)
        for earlier, later in zip(range(ROUNDS), range(1, ROUNDS)):
            newest = max(p for r, p in positions if r == earlier and p is not None)
            oldest = min(p for r, p in positions if r == later and p is not None)
            assert newest < oldest, f"{store}: round {later} ordered before round {earlier}"

        # Every daemon installs everything, and the same newest version of the shared name.
        _r, _newest, content = max(shared, key=lambda s: parse_version_id(s[1].version) or 0)
        expected[SHARED] = content
        site.wait_installed(expected, timeout=120)
        for out in outputs:
            assert sorted(p.name for p in out.iterdir()) == sorted(expected)  # no temp left

        seqs = [seq_of(p) for _r, p in positions if p is not None]
        shared_seqs = len(seqs) - len(set(seqs))
        print(
            f"\n{store}: {ROUNDS} rounds, {len(shared) + len(expected) - 1} uploads by "
            f"{len(shared)} racing processes in {race_seconds:.1f} s; {shared_seqs} log "
            f"entries shared a sequence number; {DAEMONS} daemons installed all"
        )
        if not atomic:
            assert all(u.version.count(".") == 1 for _r, u, _c in shared)
    finally:
        site.close()


@pytest.mark.parametrize("store", list(SITES))
def test_a_failed_claim_removes_the_content_it_stored(
    store: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Junk at the largest sequence number leaves no number to claim: the upload stores its
    content, fails to claim a log entry (exit 4), and takes the content back, on every store
    (with the uploader's own identity: on ministack its IAM policy must allow that)."""
    _atomic, make = SITES[store]
    site = make(request, tmp_path / store)
    cfg = load_config(site.uploader)
    layout = Layout(cfg.prefix)
    target = open_store(cfg)
    target.put(layout.log_key(MAX_SEQ), b"junk")
    src = tmp_path / "app.bin"
    src.write_bytes(os.urandom(5000))

    result = site.cli("upload", "-c", str(site.uploader), str(src))
    assert result.returncode == 4, result.stderr.decode()
    assert b"no log sequence number is free" in result.stderr, result.stderr.decode()
    assert b"Traceback" not in result.stderr
    # Read with the daemon's identity: an uploader may not list artifacts where IAM applies.
    reader = open_store(load_config(site.daemon_template))
    assert list(reader.list_after(layout.objects_prefix, "")) == [], f"{store}: content left"
    assert b"could not remove" not in result.stderr


class _SlowUploader(Catalog):
    """An uploader that listed the log before two other uploads claimed their entries, and
    whose own entry became visible only after a daemon had read theirs: it claims sequence
    number 1, behind that daemon's cursor. (What a slow PUT or a lagging listing does; made
    deterministic here.)"""

    def _next_seq(self, after: int) -> int:
        return 1


@pytest.mark.parametrize("store", [name for name, (atomic, _make) in SITES.items() if not atomic])
def test_an_entry_that_lands_behind_the_cursor_is_installed(
    store: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    _atomic, make = SITES[store]
    site = make(request, tmp_path / store)
    config = site.daemon_config(0)
    out = config.parent / "out"
    contents = {}
    for name in ("a.bin", "b.bin"):
        path = tmp_path / name
        path.write_bytes(contents.setdefault(name, os.urandom(1000)))
        result = site.cli("upload", "-c", str(site.uploader), str(path))
        assert result.returncode == 0, result.stderr.decode()
    result = site.cli("daemon", "--once", "-c", str(config))
    assert result.returncode == 0, result.stderr.decode()
    assert sorted(p.name for p in out.iterdir()) == ["a.bin", "b.bin"]

    cfg = load_config(site.uploader)
    late = tmp_path / "late.bin"
    late.write_bytes(os.urandom(1000))
    catalog = _SlowUploader.open(cfg)
    version = upload_file(cfg, catalog.store, catalog, late)
    assert seq_of(version.seq) == 1  # behind the daemon's cursor, at b.bin's entry (2)

    result = site.cli("daemon", "--once", "-c", str(config))
    assert result.returncode == 0, result.stderr.decode()
    assert (out / "late.bin").read_bytes() == late.read_bytes(), result.stderr.decode()
