"""``Storage = "S3+BitTorrent"``: fetch an artifact's ciphertext from a swarm of fleet servers.

S3's own ``?torrent`` endpoint is gone, so the servers are the swarm. Each daemon runs one
libtorrent session (no DHT, LSD, UPnP or NAT-PMP; TCP only) and, for each new artifact, joins
the private torrent carried in its encrypted manifest (``distsync.torrent_meta``). Peers come
from the bucket's peer records (``distsync.peers``) and an optional tracker; a presigned S3 GET
URL is the BEP 19 web seed, refreshed before it expires (the info-hash does not change).

S3 egress is the cost that matters, and the whole fleet should have the artifact in about the
time one server takes to download it (the Kumar-Ross bound). So S3 serves one copy, split:
the first ``s3_readers`` live nodes in rendezvous order for this info-hash each read an
interleaved share of the pieces straight from the store (one ranged GET per piece, handed to
libtorrent with ``add_piece``, which checks it against the piece hash), and get every other
piece from their peers; the other nodes get everything from peers. That is the scheme that
meets the bound: each piece leaves S3 once and its reader forwards it. Readers that finish
early help slower or dead ones (``peers.HelpPlan``). A node that goes ``web_seed_delay``
seconds (longer the further down the order it is) without verified progress adds the
presigned web seed; if even that stalls, it falls back to ranged GETs of the whole object, as
a daemon without libtorrent does.

The ciphertext goes through exactly the HTTPS path's verification, decryption and atomic
placement: ``fetch_version`` reads the swarm's file as the pieces arrive
(``ArrivingCiphertext``), so decryption overlaps the download. The node then seeds for
``seed_seconds`` and deletes its copy. Peers only ever see ciphertext.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, cast
from urllib.parse import urlsplit

from distsync import __version__
from distsync.catalog import Catalog
from distsync.config import Config
from distsync.crypto.stream import ciphertext_size
from distsync.errors import DistsyncError, FormatError, IntegrityError
from distsync.layout import Layout
from distsync.manifest import Manifest, Version
from distsync.peers import HelpPlan, PeerBook, PeerRecord, load_node_id, share_of, web_seed_wait
from distsync.storage.base import Store
from distsync.torrent_meta import TorrentMeta, TorrentWriter, piece_length_for
from distsync.transfer.fetch import FetchResult, Interrupted, fetch_version
from distsync.upload import upload_file

__all__ = [
    "ArrivingCiphertext",
    "LocalCiphertext",
    "Swarm",
    "TorrentSettings",
    "WebSeedClock",
    "default_address",
    "import_libtorrent",
    "open_swarm",
    "session_settings",
]

log = logging.getLogger("distsync.torrent")

Presign = Callable[[str, int], str]

_TICK = 0.2  # seconds between looks at a running download
_PEERS_EVERY = 10.0  # re-read peer records this often while downloading
_RECONNECT_EVERY = 2.0  # re-call connect_peer for a missing peer at most this often
_PEER_SAMPLE = 40  # records read besides the S3 readers': a random, connected swarm
_KEEP_PARTIAL = 86400.0
_QUERY = re.compile(r"\?\S*")


@dataclass(frozen=True)
class TorrentSettings:
    """The ``Torrent*`` configuration keys (README: configuration reference)."""

    port: int = 6881
    address: str | None = None  # advertised in our peer record; None: the route to the store
    seed_seconds: float = 600.0
    s3_readers: int = 8
    web_seed_delay: float = 30.0
    stall_seconds: float = 60.0
    tracker_url: str | None = None
    url_lifetime: int = 3600
    peer_ttl: float = 900.0


def import_libtorrent() -> ModuleType | None:
    """libtorrent (the ``torrent`` extra), or None when it is not installed."""
    try:
        import libtorrent
    except ImportError:
        return None
    return libtorrent


def session_settings(lt: ModuleType, settings: TorrentSettings) -> dict[str, Any]:
    """libtorrent settings for a closed fleet swarm (TESTING.md: measured on these machines)."""
    categories = lt.alert.category_t
    return {
        "listen_interfaces": f"0.0.0.0:{settings.port}",
        # Peers come only from our records and the tracker: nothing to broadcast or map.
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        # uTP was 4-6x slower than TCP here.
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        # Otherwise a presigned web seed on a private or loopback endpoint is silently dropped.
        "ssrf_mitigation": False,
        # Test fleets share one address; a real fleet never trips this.
        "allow_multiple_connections_per_ip": True,
        # One fleet, one goal: no tit-for-tat, every interested peer gets unchoked.
        "unchoke_slots_limit": -1,
        "urlseed_wait_retry": 5,
        "user_agent": f"distsync/{__version__}",
        "alert_mask": categories.error_notification
        | categories.status_notification
        | categories.peer_notification,
    }


@dataclass
class WebSeedClock:
    """When to add the web seed and when to give up on the swarm, from progress alone."""

    wait: float
    stall_seconds: float
    started: float
    web_seeded: bool = False
    done: int = -1
    last_progress: float = field(init=False)

    def __post_init__(self) -> None:
        self.last_progress = self.started

    def observe(self, now: float, done: int) -> str | None:
        """``"web_seed"`` (add it now), ``"stalled"`` (fall back) or None."""
        if done > self.done:
            self.done, self.last_progress = done, now
        idle = now - self.last_progress
        if not self.web_seeded:
            return "web_seed" if idle >= self.wait else None
        return "stalled" if idle >= self.stall_seconds else None

    def web_seed_added(self, now: float) -> None:
        self.web_seeded = True
        self.last_progress = max(self.last_progress, now)


def default_address(endpoint: str | None) -> str:
    """The local address that routes to the store: the one peers on its network can reach."""
    host = urlsplit(endpoint).hostname if endpoint else None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((host or "s3.amazonaws.com", 443))  # UDP: nothing is sent
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


class LocalCiphertext:
    """Ciphertext in a local file, read the way ``fetch_version`` reads the store."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"local copy {path}"

    def size(self, key: str) -> int:
        return self.path.stat().st_size

    def get_range(self, key: str, start: int, length: int) -> bytes:
        with open(self.path, "rb") as handle:
            handle.seek(start)
            return handle.read(length)


class ArrivingCiphertext(LocalCiphertext):
    """The swarm's copy while it downloads: a range is handed out once its pieces are in.

    So decryption runs alongside the download instead of after it. A piece counts once
    libtorrent has it *and* the file's bytes hash to the manifest's value: libtorrent may
    report a piece before its blocks reach the file, and this way nothing but the exact
    uploaded ciphertext ever reaches the chunk checks. ``check()`` raises to abandon the wait
    (the swarm gave up, or a stop was requested).
    """

    def __init__(
        self, path: Path, meta: TorrentMeta, have: Callable[[int], bool], check: Callable[[], None]
    ) -> None:
        super().__init__(path)
        self.meta = meta
        self._have = have
        self._check = check
        self._ready: set[int] = set()

    def size(self, key: str) -> int:
        return self.meta.length  # the file grows as pieces land; the torrent says how long

    def get_range(self, key: str, start: int, length: int) -> bytes:
        piece = self.meta.piece_length
        for index in range(start // piece, (start + max(length, 1) - 1) // piece + 1):
            self._wait(index)
        return super().get_range(key, start, length)

    def _wait(self, index: int) -> None:
        pause = 0.01
        while index not in self._ready:
            self._check()
            if self._have(index) and self._hashes(index):
                self._ready.add(index)
                return
            time.sleep(pause)
            pause = min(2 * pause, 0.2)

    def _hashes(self, index: int) -> bool:
        start = index * self.meta.piece_length
        try:
            data = LocalCiphertext.get_range(self, "", start, self.meta.piece_length)
        except FileNotFoundError:  # libtorrent may report a piece before its file exists
            return False
        expected = self.meta.pieces[20 * index : 20 * index + 20]
        return hashlib.sha1(data).digest() == expected


class _ShareReader:
    """Reads this node's share of the pieces from the store and hands them to libtorrent.

    libtorrent checks each added piece against the manifest's hashes before it counts or is
    served. A read that fails is logged and ends this reader's part: the other readers then
    see its pieces stuck and read them (``HelpPlan``), and the web seed is the last resort.
    """

    def __init__(
        self, store: Store, key: str, meta: TorrentMeta, share: range, handle: Any
    ) -> None:
        self._store = store
        self._key = key
        self._meta = meta
        self._share = share
        self._handle = handle
        self._stop = threading.Event()
        self.helped = 0
        self._thread = threading.Thread(target=self._run, name="distsync-share", daemon=True)
        self._thread.start()

    def _read(self, piece: int) -> tuple[int, bytes | None]:
        if self._stop.is_set():
            raise Interrupted("share reading stopped")
        if self._handle.have_piece(piece) or self._available()[piece]:
            return piece, None  # a peer already has it (another reader took it): no S3 read
        start = piece * self._meta.piece_length
        length = min(self._meta.piece_length, self._meta.length - start)
        data = self._store.get_range(self._key, start, length)
        if len(data) != length:
            raise IntegrityError(f"{self._key} is shorter than its torrent says")
        return piece, data

    def _available(self) -> list[int]:
        """How many peers have each piece (libtorrent answers [] once we have them all)."""
        counts = list(self._handle.piece_availability())
        return counts + [0] * (self._meta.piece_count - len(counts))

    def _run(self) -> None:
        try:
            # One request at a time: pieces then land at an even pace, which the swarm
            # forwards best (two in flight measured 5-10 % slower and read more twice).
            for piece in self._share:
                self._add(*self._read(piece))
            if self._share.step > 1:
                self._help()
        except Interrupted:
            pass
        except DistsyncError as exc:
            log.warning("stopped reading this node's share of %s: %s", self._key, exc)

    def _add(self, piece: int, data: bytes | None) -> bool:
        if data is not None:
            self._handle.add_piece(piece, data, 0)
        return data is not None

    def _help(self) -> None:
        """With our share read, read pieces of readers that fall behind (``HelpPlan``).

        Shares are equal but links are not, so the S3 link would otherwise idle at the end
        while the slowest readers finish; this also covers a reader that died.
        """
        plan = HelpPlan(self._share.step, self._share.start, time.monotonic())
        while not self._stop.is_set():
            available = self._available()
            busy = {block["piece_index"] for block in self._handle.get_download_queue()}
            missing = [
                piece
                for piece in range(self._meta.piece_count)
                if not available[piece] and piece not in busy and not self._handle.have_piece(piece)
            ]
            if not missing:
                return
            piece = plan.next(missing, time.monotonic())
            if piece is None:
                time.sleep(_TICK / 2)
            elif self._add(*self._read(piece)):
                self.helped += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


class _SwarmGaveUp(DistsyncError):
    """The swarm could not deliver; the caller falls back to ranged GETs."""


@dataclass
class _Job:
    handle: Any
    meta: TorrentMeta
    key: str
    path: Path
    url: str | None = None
    url_expires: float = 0.0
    seed_until: float | None = None  # set once installed


class _Watcher:
    """Runs ``Swarm._follow`` beside the verification; remembers why the swarm gave up."""

    def __init__(self, follow: Callable[[threading.Event], None]) -> None:
        self.failure: BaseException | None = None
        self.done = threading.Event()
        self._follow = follow
        self._thread = threading.Thread(target=self._run, name="distsync-swarm", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._follow(self.done)
        except BaseException as exc:  # handed to the verifying thread by check()
            self.failure = exc

    def check(self, should_stop: Callable[[], bool]) -> None:
        if should_stop():
            raise Interrupted("stopped before the transfer finished")
        if self.failure is not None:
            raise self.failure

    def stop(self) -> None:
        self.done.set()
        self._thread.join(60)


class Swarm:
    """One libtorrent session for the daemon's lifetime, one torrent per artifact version."""

    def __init__(
        self,
        lt: ModuleType,
        settings: TorrentSettings,
        store: Store,
        secret: bytes,
        prefix: str,
        work_dir: Path,
        *,
        presign: Presign | None = None,
        address: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lt = lt
        self.settings = settings
        self.store = store
        self.work_dir = work_dir
        self.presign = presign
        self._clock = clock
        self.pieces_dir = work_dir / "pieces"
        self.pieces_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._remove_stale_copies()
        self.node = load_node_id(work_dir / "node-id")
        self.book = PeerBook(store, prefix, secret, self.node, clock=clock)
        self.session = lt.session(session_settings(lt, settings))
        self.port = self._listening_port()
        if not self.port:
            # Still a leecher (it connects out), but nobody can connect in: no record.
            log.warning("cannot listen on TorrentPort %d; this server will not seed", settings.port)
        self.address = settings.address or address or "127.0.0.1"
        self._jobs: dict[str, _Job] = {}
        self._published = 0.0
        self._tried: dict[tuple[str, int], float] = {}
        self.maintain()

    def _listening_port(self) -> int:
        """The port the session listens on, once it does (0 if it cannot)."""
        for _attempt in range(50):  # libtorrent opens its sockets asynchronously
            port = int(self.session.listen_port())
            if port:
                return port
            time.sleep(0.02)
        return 0

    def _remove_stale_copies(self) -> None:
        """Copies a crashed daemon left. Recent ones stay: the same version is usually
        fetched again after a restart, and libtorrent resumes from whatever checks out."""
        for stale in self.pieces_dir.iterdir():
            with contextlib.suppress(OSError):
                if self._clock() - stale.stat().st_mtime > _KEEP_PARTIAL:
                    stale.unlink()

    # -- the daemon's side ------------------------------------------------------------------

    def fetch(
        self,
        store: Store,
        secret: bytes,
        version: Version,
        dest: Path,
        *,
        workers: int = 4,
        progress: Callable[[int], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        mode_mask: int = 0o777,
    ) -> FetchResult:
        """``fetch_version``'s drop-in: through the swarm, else by ranged GETs from ``store``.

        The swarm's ciphertext goes through ``fetch_version`` itself (chunk AEAD, SHA-256,
        temp file, fsync, rename) while it arrives.
        """
        manifest = version.manifest
        started = time.monotonic()

        def from_source(source: Store) -> FetchResult:
            return fetch_version(
                source, secret, version, dest,
                workers=workers, progress=progress, should_stop=should_stop,
                mode_mask=mode_mask,
            )  # fmt: skip

        if manifest.torrent is None:
            return from_source(store)
        try:
            meta = TorrentMeta.from_manifest(manifest.torrent, manifest.object_size)
        except FormatError as exc:
            raise IntegrityError(f"version {version.version_id}: {exc}") from None
        job = self._jobs.get(meta.info_hash) or self._add(meta, manifest.object_key)
        reader, watcher = self._join(store, job)
        try:
            arriving = ArrivingCiphertext(
                job.path, meta, job.handle.have_piece, lambda: watcher.check(should_stop)
            )
            # fetch_version only reads (size, get_range); docs/patches/torrent-fetch.diff
            # names that interface ChunkSource, which makes this cast unnecessary.
            result = from_source(cast(Store, arriving))
        except _SwarmGaveUp as exc:
            log.warning("%s; fetching version %s by ranged GETs", exc, version.version_id)
            self._drop(meta.info_hash)
            return from_source(store)
        except IntegrityError as exc:
            # Every piece matched the manifest's hashes, so the upload itself is bad (or the
            # disk is): let the store's own copy give the verdict.
            log.warning("the swarm's copy failed verification (%s); reading the store", exc)
            self._drop(meta.info_hash)
            return from_source(store)
        finally:
            watcher.stop()
            if reader is not None:
                reader.stop()
                log.info("read %d pieces of others' shares", reader.helped)
        took = time.monotonic() - started
        log.info(
            "the swarm delivered %s in %.2f s (%.1f MB/s)",
            manifest.object_key, took, manifest.object_size / max(took, 1e-6) / 1e6,
        )  # fmt: skip
        result = dataclasses.replace(result, seconds=took)
        job.seed_until = self._clock() + self.settings.seed_seconds
        if job.url is not None:
            job.handle.remove_url_seed(job.url)  # a seed never needs it; spare S3 the GETs
            job.url = None
        self.maintain()
        return result

    def maintain(self) -> None:
        """Housekeeping between installs: refresh our record, end finished seeding windows."""
        now = self._clock()
        if self.port and now - self._published >= self.settings.peer_ttl / 3:
            try:
                self.book.publish(self.address, self.port, self.settings.peer_ttl)
                self._published = now
            except DistsyncError as exc:
                log.warning("cannot write this server's peer record: %s", exc)
        for info_hash, job in list(self._jobs.items()):
            if job.seed_until is not None and now >= job.seed_until:
                log.info("seeding of %s ended", job.key)
                self._drop(info_hash)
        self._drain_alerts()

    def close(self) -> None:
        """Leave the swarm: withdraw our record, drop every torrent and its local copy."""
        try:
            self.book.withdraw()
        except DistsyncError as exc:
            log.warning("cannot withdraw this server's peer record: %s", exc)
        for info_hash in list(self._jobs):
            self._drop(info_hash)
        self._drain_alerts()

    # -- one download -----------------------------------------------------------------------

    def _join(self, store: Store, job: _Job) -> tuple[_ShareReader | None, _Watcher]:
        """Find the peers, start reading our share from the store, watch the swarm."""
        readers = self.settings.s3_readers
        found = self.book.discover(job.meta.info_hash, first=readers, sample=_PEER_SAMPLE)
        share = share_of(found.chosen, self.node, job.meta.piece_count)
        wait = web_seed_wait(found.position, readers, self.settings.web_seed_delay)
        log.info(
            "joining the swarm for %s: %d pieces, %d peers, %d pieces from the store, "
            "web seed after %g s without progress",
            job.key, job.meta.piece_count, len(found.records), len(share), wait,
        )  # fmt: skip
        self._connect(job, found.records)
        reader = _ShareReader(store, job.key, job.meta, share, job.handle) if share else None
        clock = WebSeedClock(wait, self.settings.stall_seconds, time.monotonic())
        return reader, _Watcher(lambda done: self._follow(job, clock, found.records, done))

    def _follow(
        self, job: _Job, clock: WebSeedClock, records: list[PeerRecord], done: threading.Event
    ) -> None:
        """Until the torrent is complete: connect peers, add the web seed when due, and raise
        _SwarmGaveUp when even that makes no progress."""
        looked = time.monotonic()
        while not done.wait(_TICK):
            status = job.handle.status()
            if status.errc.value():
                raise _SwarmGaveUp(f"torrent error: {status.errc.message()}")
            if status.is_seeding:
                return
            now = time.monotonic()
            verdict = clock.observe(now, int(status.total_wanted_done))
            if verdict == "web_seed":
                self._add_web_seed(job)
                clock.web_seed_added(now)
            elif verdict == "stalled":
                stall = self.settings.stall_seconds
                raise _SwarmGaveUp(f"the swarm for {job.key} made no progress for {stall:g} s")
            self._refresh_web_seed(job)
            if now - looked >= _PEERS_EVERY:
                records = self.book.discover(
                    job.meta.info_hash, first=self.settings.s3_readers, sample=_PEER_SAMPLE
                ).records
                looked = now
            self._connect(job, records)
            self._drain_alerts()

    def _add(self, meta: TorrentMeta, key: str) -> _Job:
        lt = self.lt
        params = lt.add_torrent_params()
        trackers = [self.settings.tracker_url] if self.settings.tracker_url else []
        params.ti = lt.torrent_info(meta.torrent_file(trackers))
        params.save_path = str(self.pieces_dir)
        # Not auto-managed: a queue limit must never park a download the daemon waits for.
        params.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
        handle = self.session.add_torrent(params)
        job = _Job(handle, meta, key, self.pieces_dir / meta.name)
        self._jobs[meta.info_hash] = job
        return job

    def _add_web_seed(self, job: _Job) -> None:
        if self.presign is None:
            log.info("no web seed for %s: this store cannot presign URLs", job.key)
            return
        try:
            job.url = self.presign(job.key, self.settings.url_lifetime)
        except DistsyncError as exc:
            log.warning("cannot presign a web seed URL for %s: %s", job.key, exc)
            return
        job.url_expires = time.monotonic() + self.settings.url_lifetime
        job.handle.add_url_seed(job.url)
        log.info("web seed added for %s", job.key)

    def _refresh_web_seed(self, job: _Job) -> None:
        """Swap in a fresh presigned URL before the old one expires; the torrent is the same."""
        margin = min(300.0, self.settings.url_lifetime / 4)
        if job.url is None or time.monotonic() < job.url_expires - margin:
            return
        old = job.url
        self._add_web_seed(job)
        if job.url != old:
            job.handle.remove_url_seed(old)

    def _connect(self, job: _Job, records: list[PeerRecord]) -> None:
        """connect_peer until each peer shows up (a first call can be silently dropped)."""
        connected = {tuple(peer.ip) for peer in job.handle.get_peer_info()}
        now = time.monotonic()
        for record in records:
            address = record.address
            if record.node == self.node or address in connected:
                continue
            if now - self._tried.get(address, -_RECONNECT_EVERY) < _RECONNECT_EVERY:
                continue
            self._tried[address] = now
            job.handle.connect_peer(address)

    def _drop(self, info_hash: str) -> None:
        job = self._jobs.pop(info_hash, None)
        if job is not None:
            self.session.remove_torrent(job.handle, self.lt.options_t.delete_files)

    def _drain_alerts(self) -> None:
        lt = self.lt
        for alert in self.session.pop_alerts():
            if isinstance(alert, (lt.url_seed_alert, lt.hash_failed_alert, lt.peer_ban_alert)):
                # Presigned URLs carry a signature: never log a query string.
                log.warning("swarm: %s", _QUERY.sub("?…", alert.message()))
            elif alert.category() & lt.alert.category_t.error_notification:
                log.debug("swarm: %s", _QUERY.sub("?…", alert.message()))


def open_swarm(
    settings: TorrentSettings,
    store: Store,
    secret: bytes,
    prefix: str,
    work_dir: Path,
    *,
    endpoint: str | None = None,
) -> Swarm | None:
    """A Swarm, or None (logged) without libtorrent: the daemon then uses ranged GETs."""
    lt = import_libtorrent()
    if lt is None:
        log.warning(
            "Storage is S3+BitTorrent but libtorrent is not installed "
            "(pip install 'distsync[torrent]'); using ranged GETs"
        )
        return None
    presign: Presign | None = getattr(store, "presign", None)
    address = settings.address or default_address(endpoint)
    return Swarm(lt, settings, store, secret, prefix, work_dir, presign=presign, address=address)


# -- interim drivers ---------------------------------------------------------------------------
# Until docs/patches/torrent-*.diff are applied, these run the real uploader and the real
# Daemon with the torrent steps wired in from outside, for tests and bench/fleet.py:
#   python -m distsync.transfer.torrent upload -c CONFIG FILE
#   python -m distsync.transfer.torrent daemon -c CONFIG [--https-only] [--port N] ...


def upload_with_torrent(
    cfg: Config, store: Store, catalog: Catalog, path: Path, *, name: str | None = None
) -> Version:
    """``upload_file`` with the torrent hashed on the way out, as torrent-upload.diff does."""
    size = path.stat().st_size
    writers: list[TorrentWriter] = []

    class HashingStore:
        def __getattr__(self, attr: str) -> Any:
            return getattr(store, attr)

        def writer(self, key: str) -> TorrentWriter:
            piece = piece_length_for(ciphertext_size(size, cfg.chunk_size))
            writers.append(TorrentWriter(store.writer(key), key.rsplit("/", 1)[-1], piece))
            return writers[-1]

    class TorrentCatalog:
        layout = catalog.layout

        def append(self, manifest: Manifest) -> Version:
            torrent = writers[-1].meta().to_manifest()
            return catalog.append(dataclasses.replace(manifest, torrent=torrent))

    # As "S3", a patched upload_file leaves the hashing to this driver instead of doing it too.
    plain = dataclasses.replace(cfg, storage="S3")
    return upload_file(
        plain, cast(Store, HashingStore()), cast(Catalog, TorrentCatalog()), path, name=name
    )


def boto3_presigner(cfg: Config) -> Presign:
    """Presigned GETs with the config's own credentials (torrent-s3.diff adds S3Store.presign)."""
    from distsync.storage.s3 import S3Store

    client = S3Store.from_config(cfg)._client

    def presign(key: str, expires: int) -> str:
        params = {"Bucket": cfg.storage_bucket, "Key": key}
        return str(client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires))

    return presign


def run_daemon(cfg: Config, settings: TorrentSettings | None, *, once: bool = False) -> int:
    """The real Daemon, fetching through a Swarm (``settings=None``: ranged GETs only)."""
    from unittest import mock

    from distsync import daemon as daemon_module
    from distsync.storage import open_store

    store = open_store(cfg)
    swarm = None
    if settings is not None:
        swarm = open_swarm(
            settings, store, cfg.secret, cfg.prefix, cfg.daemon_state_dir() / "torrent",
            endpoint=cfg.aws.endpoint,
        )  # fmt: skip
    if swarm is not None and swarm.presign is None and cfg.storage != "Local":
        swarm.presign = boto3_presigner(cfg)

    class SwarmDaemon(daemon_module.Daemon):
        def cycle(self) -> daemon_module.CycleReport:
            if swarm is not None:
                swarm.maintain()
            return super().cycle()

    # As "S3", a patched Daemon opens no swarm of its own: this driver's is the one.
    cfg = dataclasses.replace(cfg, storage="S3")
    try:
        if swarm is None:
            return SwarmDaemon(cfg, store).run(once=once)
        # torrent-daemon.diff makes the Daemon choose this itself.
        with mock.patch.object(daemon_module, "fetch_version", swarm.fetch):
            return SwarmDaemon(cfg, store).run(once=once)
    finally:
        if swarm is not None:
            swarm.close()


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import sys

    from distsync.config import load_config

    parser = argparse.ArgumentParser(prog="python -m distsync.transfer.torrent")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upload")
    up.add_argument("-c", "--config", required=True)
    up.add_argument("file", type=Path)
    up.add_argument("--name")
    run = sub.add_parser("daemon")
    run.add_argument("-c", "--config", required=True)
    run.add_argument("--once", action="store_true")
    run.add_argument("--https-only", action="store_true", help="no swarm: ranged GETs only")
    defaults = TorrentSettings()
    for option in ("port", "s3_readers"):
        run.add_argument(
            "--" + option.replace("_", "-"), type=int, default=getattr(defaults, option)
        )
    for option in ("seed_seconds", "web_seed_delay", "stall_seconds", "peer_ttl"):
        run.add_argument(
            "--" + option.replace("_", "-"), type=float, default=getattr(defaults, option)
        )
    run.add_argument("--url-lifetime", type=int, default=defaults.url_lifetime)
    run.add_argument("--tracker-url")
    run.add_argument("--address")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = load_config(args.config)
        if args.command == "upload":
            from distsync.storage import open_store

            store = open_store(cfg)
            catalog = Catalog(store, Layout(cfg.prefix), cfg.secret)
            version = upload_with_torrent(cfg, store, catalog, args.file, name=args.name)
            facts = dict(version.facts(), announced_at=time.time())
            facts["object_size"] = version.manifest.object_size
            print(json.dumps(facts), flush=True)
            return 0
        settings = None
        if not args.https_only:
            settings = TorrentSettings(
                port=args.port,
                address=args.address,
                seed_seconds=args.seed_seconds,
                s3_readers=args.s3_readers,
                web_seed_delay=args.web_seed_delay,
                stall_seconds=args.stall_seconds,
                tracker_url=args.tracker_url,
                url_lifetime=args.url_lifetime,
                peer_ttl=args.peer_ttl,
            )
        return run_daemon(cfg, settings, once=args.once)
    except DistsyncError as exc:
        print(f"distsync: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
