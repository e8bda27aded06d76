"""The libtorrent session: one per daemon for its whole life, one torrent per artifact version.

For each new artifact the daemon joins the private torrent carried in its encrypted manifest
(``swarm.meta``). Peers come from the bucket's peer records (``swarm.peerbook``) and an
optional tracker; the first few live nodes in rendezvous order read the pieces from the
store (``swarm.reader``); a presigned S3 GET URL is the BEP 19 web seed, added by a node that
makes no progress and refreshed before it expires; a swarm that still makes no progress, or
any libtorrent failure (``SwarmError``), falls back to ranged GETs. Who does what is decided
by ``swarm.plan``, which does no I/O.

The ciphertext goes through exactly the HTTPS path's verification, decryption and atomic
placement: ``fetch_version`` reads the swarm's file as the pieces arrive (``ArrivingCiphertext``).
The node then seeds for ``seed_seconds`` and deletes its copy. Peers only ever see ciphertext.

Threads, each with one owner (``distsync.threads``): the session's alert watcher, owned by
the Swarm (started with it, joined by ``close``); and per download the share reader and the
swarm watcher, owned by ``fetch`` (joined before it returns). A peer connecting to us while
we know of nothing new is how a fleet hears of a release before its next poll (``on_news``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import re
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from distsync.errors import (
    ContentGoneError,
    DistsyncError,
    FormatError,
    IntegrityError,
    NotFoundError,
    StorageError,
    SwarmError,
)
from distsync.manifest import Version
from distsync.storage.base import Presigner, Store
from distsync.swarm.arriving import ArrivingCiphertext
from distsync.swarm.lt import import_libtorrent, libtorrent_errors, session_settings
from distsync.swarm.meta import TorrentMeta, bencode
from distsync.swarm.peerbook import PeerBook, PeerRecord, load_node_id
from distsync.swarm.plan import WebSeedClock, share_of, web_seed_wait
from distsync.swarm.reader import ShareReader
from distsync.swarm.settings import TorrentSettings
from distsync.threads import OwnedThread, interruptible
from distsync.transfer.fetch import FetchResult, Interrupted, fetch_version

__all__ = ["Swarm", "default_address", "knock", "open_swarm"]

log = logging.getLogger("distsync.swarm")

_TICK = 0.2  # seconds between looks at a running download
_PEERS_EVERY = 10.0  # re-read peer records this often while downloading
_RECONNECT_EVERY = 2.0  # re-call connect_peer for a missing peer at most this often
_PEER_SAMPLE = 40  # records read besides the S3 readers': a random, connected swarm
_KEEP_PARTIAL = 86400.0  # a crashed daemon's copy is resumed within this long, then deleted
_JOIN = 10.0  # seconds an owned thread gets to end once cancelled (it needs far less)
_NEWS_EVERY = 1.0  # at most one early poll per this many seconds on a peer's say-so
_KNOCK_WAIT = 0.2  # seconds a knock waits for peers' connections to open
_QUERY = re.compile(r"\?\S*")


@dataclass
class _Job:
    handle: Any
    meta: TorrentMeta
    key: str
    path: Path
    url: str | None = None
    url_expires: float = 0.0
    seed_until: float | None = None  # set once installed


class Swarm:
    """One libtorrent session for the daemon's lifetime, one torrent per artifact version.

    Construction does no store I/O (a store that hangs must not hold up the daemon's start);
    the peer record is first written by ``maintain``, which the daemon's cycle calls.
    """

    def __init__(
        self,
        lt: ModuleType,
        settings: TorrentSettings,
        store: Store,
        secret: bytes,
        prefix: str,
        work_dir: Path,
        *,
        presigner: Presigner | None = None,
        address: str | None = None,
        clock: Callable[[], float] = time.time,
        on_news: Callable[[], None] = lambda: None,
    ) -> None:
        self.lt = lt
        self.settings = settings
        self.store = store
        self.presigner = presigner
        self._clock = clock
        self._on_news = on_news
        self.pieces_dir = work_dir / "pieces"
        try:
            self.pieces_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise SwarmError(f"cannot create {self.pieces_dir}: {exc.strerror}") from None
        self._remove_stale_copies()
        self.node = load_node_id(work_dir / "node-id")
        self.book = PeerBook(store, prefix, secret, self.node, clock=clock)
        with libtorrent_errors("start a session"):
            self.session = lt.session(session_settings(lt, settings))
            self.port = self._listening_port()
            self._lobby = self._add_lobby()
        if not self.port:
            # Still a leecher (it connects out), but nobody can connect in: no record.
            log.warning("cannot listen on TorrentPort %d; this server will not seed", settings.port)
        self.address = settings.address or address or "127.0.0.1"
        self._jobs: dict[str, _Job] = {}
        self._published = -settings.peer_ttl
        self._tried: dict[tuple[str, int], float] = {}
        self._news_at = -_NEWS_EVERY
        self._alerts = OwnedThread("distsync-swarm-alerts", self._watch_alerts).start()

    def _listening_port(self) -> int:
        """The port the session listens on, once it does (0 if it cannot)."""
        for _attempt in range(50):  # libtorrent opens its sockets asynchronously
            port = int(self.session.listen_port())
            if port:
                return port
            time.sleep(0.02)
        return 0

    def _add_lobby(self) -> Any:
        """A torrent nobody can join, so the session accepts incoming connections.

        libtorrent turns every incoming connection away unheard while it has no active
        torrent; with this one it lets them in (and then refuses unknown info-hashes), which
        is how a peer that noticed a new artifact first wakes us (``on_news``). Its info-hash
        is random and it is in upload mode: it never connects, downloads or writes anything.
        """
        lt = self.lt
        info = {
            "length": 1,
            "name": "lobby" + os.urandom(16).hex(),
            "piece length": 16 << 10,
            "pieces": bytes(20),
            "private": 1,
        }
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(bencode({"info": info}))
        params.save_path = str(self.pieces_dir)
        params.flags |= lt.torrent_flags.upload_mode
        params.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.paused)
        return self.session.add_torrent(params)

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

        def from_source(source: Any) -> FetchResult:
            return fetch_version(
                source, secret, version, dest,
                workers=workers, progress=progress, should_stop=should_stop,
                mode_mask=mode_mask,
            )  # fmt: skip

        if manifest.torrent is None:
            return from_source(store)
        # One HEAD first: a pruned content (distsync prune) is said at once, rather than
        # after the swarm's web-seed and stall timeouts. A store that fails otherwise is left
        # to the swarm, whose peers may have the pieces.
        try:
            store.size(manifest.object_key)
        except NotFoundError:
            raise ContentGoneError(manifest.name, version.version_id) from None
        except StorageError as exc:
            log.debug("cannot check version %s in the store: %s", version.version_id, exc)
        try:
            meta = TorrentMeta.from_manifest(manifest.torrent, manifest.object_size)
        except FormatError as exc:
            raise IntegrityError(f"version {version.version_id}: {exc}") from None
        try:
            with libtorrent_errors("add the torrent"):
                job = self._jobs.get(meta.info_hash) or self._add(meta, manifest.object_key)
            reader, watcher = self._join(store, job)
        except SwarmError as exc:
            log.warning("%s; fetching version %s by ranged GETs", exc, version.version_id)
            self._drop(meta.info_hash)
            return from_source(store)

        def check() -> None:
            if should_stop():
                raise Interrupted("stopped before the transfer finished")
            for thread in (watcher, reader):
                failure = thread.failure if thread is not None else None
                if isinstance(failure, SwarmError):
                    raise failure
                if failure is not None:  # a libtorrent call (store failures end a reader quietly)
                    raise SwarmError(f"libtorrent failed: {failure}") from failure

        def have(piece: int) -> bool:
            with libtorrent_errors("report a piece"):
                return bool(job.handle.have_piece(piece))

        ended = [False]
        try:
            try:
                result = from_source(ArrivingCiphertext(job.path, meta, have, check))
            finally:  # the owned threads end before anything they use is torn down
                ended[0] = self._end(watcher, "the swarm watcher")
                if reader is not None:
                    ended[0] &= self._end(reader, "the share reader")
                    with contextlib.suppress(BaseException):
                        log.info("read %d pieces of others' shares", reader.result())
        except SwarmError as exc:
            log.warning("%s; fetching version %s by ranged GETs", exc, version.version_id)
            if ended[0]:  # else a thread may still use the torrent: it stays until close()
                self._drop(meta.info_hash)
            return from_source(store)
        except IntegrityError as exc:
            # Every piece matched the manifest's hashes, so the upload itself is bad (or the
            # disk is): let the store's own copy give the verdict.
            log.warning("the swarm's copy failed verification (%s); reading the store", exc)
            if ended[0]:
                self._drop(meta.info_hash)
            return from_source(store)
        took = time.monotonic() - started
        log.info(
            "the swarm delivered %s in %.2f s (%.1f MB/s)",
            manifest.object_key, took, manifest.object_size / max(took, 1e-6) / 1e6,
        )  # fmt: skip
        job.seed_until = self._clock() + self.settings.seed_seconds
        if job.url is not None:
            with contextlib.suppress(Exception):  # a seed never needs it; spare S3 the GETs
                job.handle.remove_url_seed(job.url)
            job.url = None
        return dataclasses.replace(result, seconds=took)

    def maintain(self) -> None:
        """Housekeeping between installs: refresh our record, end finished seeding windows."""
        now = self._clock()
        if self.port and now - self._published >= self.settings.peer_ttl / 3:
            try:
                self.book.publish(self.address, self.port, self.settings.peer_ttl)
                first = self._published < 0
                self._published = now
                if first:
                    log.info("peer record published: %s port %d", self.address, self.port)
            except Interrupted:
                raise
            except DistsyncError as exc:
                log.warning("cannot write this server's peer record: %s", exc)
        for info_hash, job in list(self._jobs.items()):
            if job.seed_until is not None and now >= job.seed_until:
                log.info("seeding of %s ended", job.key)
                self._drop(info_hash)

    def close(self) -> None:
        """Leave the swarm: withdraw our record, drop every torrent and its local copy.

        Only once no fetch runs (the daemon joins its worker first)."""
        self._end(self._alerts, "the alert watcher")
        try:
            self.book.withdraw()
        except DistsyncError as exc:
            log.warning("cannot withdraw this server's peer record: %s", exc)
        for info_hash in list(self._jobs):
            self._drop(info_hash)
        with contextlib.suppress(Exception):
            self.session.remove_torrent(self._lobby)

    # -- one download -----------------------------------------------------------------------

    def _join(self, store: Store, job: _Job) -> tuple[OwnedThread[int] | None, OwnedThread[None]]:
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
        with libtorrent_errors("connect to peers"):
            self._connect(job, found.records)
        knock([r.address for r in found.records if r.node != self.node], _KNOCK_WAIT)
        reader = None
        if share:
            body = ShareReader(
                store, job.key, job.meta, share, job.handle, self.lt.torrent_handle.query_pieces
            )
            reader = OwnedThread("distsync-swarm-reader", body.run).start()
        clock = WebSeedClock(wait, self.settings.stall_seconds, time.monotonic())
        records = found.records
        watcher = OwnedThread(
            "distsync-swarm-watcher",
            lambda cancelled: self._follow(store, job, clock, records, cancelled),
        ).start()
        return reader, watcher

    def _follow(
        self,
        store: Store,
        job: _Job,
        clock: WebSeedClock,
        records: list[PeerRecord],
        cancelled: threading.Event,
    ) -> None:
        """Until the torrent is complete: connect peers, add the web seed when due, and raise
        SwarmError when even that makes no progress."""
        looked = time.monotonic()
        while not cancelled.wait(_TICK):
            with libtorrent_errors("report the torrent's status"):
                status = job.handle.status()
                if status.errc.value():
                    raise SwarmError(f"torrent error: {status.errc.message()}")
                if status.is_seeding:
                    return
                done = int(status.total_wanted_done)
            now = time.monotonic()
            verdict = clock.observe(now, done)
            if verdict == "web_seed":
                self._add_web_seed(job)
                clock.web_seed_added(now)
            elif verdict == "stalled":
                stall = self.settings.stall_seconds
                raise SwarmError(f"the swarm for {job.key} made no progress for {stall:g} s")
            self._refresh_web_seed(job)
            if now - looked >= _PEERS_EVERY:
                records = self.book.discover(
                    job.meta.info_hash, first=self.settings.s3_readers, sample=_PEER_SAMPLE,
                    store=interruptible(store, cancelled.is_set),
                ).records  # fmt: skip
                looked = now
            with libtorrent_errors("connect to peers"):
                self._connect(job, records)

    def _end(self, thread: OwnedThread[Any], what: str) -> bool:
        """Cancel and join an owned thread; True once it has ended."""
        if thread.stop(_JOIN):
            return True
        log.error("%s did not stop within %g s", what, _JOIN)
        return False

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
        if self.presigner is None:
            log.info("no web seed for %s: this store cannot presign URLs", job.key)
            return
        try:
            url = self.presigner.presign(job.key, self.settings.url_lifetime)
        except DistsyncError as exc:
            log.warning("cannot presign a web seed URL for %s: %s", job.key, exc)
            return
        with libtorrent_errors("add the web seed"):
            job.handle.add_url_seed(url)
        job.url, job.url_expires = url, time.monotonic() + self.settings.url_lifetime
        log.info("web seed added for %s", job.key)

    def _refresh_web_seed(self, job: _Job) -> None:
        """Swap in a fresh presigned URL before the old one expires; the torrent is the same."""
        margin = min(300.0, self.settings.url_lifetime / 4)
        if job.url is None or time.monotonic() < job.url_expires - margin:
            return
        old = job.url
        self._add_web_seed(job)
        if job.url != old:
            with libtorrent_errors("remove the old web seed"):
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
            try:
                with libtorrent_errors("remove a torrent"):
                    self.session.remove_torrent(job.handle, self.lt.options_t.delete_files)
            except SwarmError as exc:
                log.warning("%s", exc)

    # -- the session's alerts ---------------------------------------------------------------

    def _watch_alerts(self, cancelled: threading.Event) -> None:
        """Log what matters, and pass on news: a peer that connects to us may have noticed
        an artifact we have not seen yet (a wasted look costs one conditional request)."""
        lt = self.lt
        while not cancelled.is_set():
            try:
                with libtorrent_errors("read its alerts"):
                    self.session.wait_for_alert(250)
                    alerts = self.session.pop_alerts()
            except SwarmError as exc:
                log.warning("%s; no more swarm alerts", exc)
                return
            for alert in alerts:
                if isinstance(alert, lt.incoming_connection_alert):
                    now = time.monotonic()
                    if now - self._news_at >= _NEWS_EVERY:
                        self._news_at = now
                        self._on_news()
                elif isinstance(
                    alert, (lt.url_seed_alert, lt.hash_failed_alert, lt.peer_ban_alert)
                ):
                    # Presigned URLs carry a signature: never log a query string.
                    log.warning("swarm: %s", _QUERY.sub("?…", alert.message()))
                elif alert.category() & lt.alert.category_t.error_notification:
                    log.debug("swarm: %s", _QUERY.sub("?…", alert.message()))


def knock(addresses: list[tuple[str, int]], wait: float) -> None:
    """Open a TCP connection to each address and close it again: the news, peer to peer.

    A peer's session sees an incoming connection and its daemon polls at once (``on_news``).
    libtorrent would connect too, but only on its next once-a-second round; a knock takes one
    round trip. Nothing is sent; addresses that do not answer within ``wait`` are let go.
    """
    pending: dict[int, socket.socket] = {}
    with selectors.DefaultSelector() as selector:
        for address in addresses:
            try:
                sock = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
            except OSError:
                continue
            sock.setblocking(False)
            if sock.connect_ex(address) not in (0, errno.EINPROGRESS):
                sock.close()
                continue
            selector.register(sock, selectors.EVENT_WRITE)
            pending[sock.fileno()] = sock
        deadline = time.monotonic() + wait
        while pending and (left := deadline - time.monotonic()) > 0:
            for key, _events in selector.select(left):
                sock = pending.pop(key.fd)
                selector.unregister(sock)
                sock.close()
        for sock in pending.values():
            sock.close()


def default_address(endpoint: str | None) -> str:
    """The local address that routes to the store: the one peers on its network can reach."""
    from urllib.parse import urlsplit

    host = urlsplit(endpoint).hostname if endpoint else None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((host or "s3.amazonaws.com", 443))  # UDP: nothing is sent
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def open_swarm(
    settings: TorrentSettings,
    store: Store,
    secret: bytes,
    prefix: str,
    work_dir: Path,
    *,
    endpoint: str | None = None,
    presigner: Presigner | None = None,
    on_news: Callable[[], None] = lambda: None,
) -> Swarm | None:
    """A Swarm, or None (logged) without libtorrent or when it cannot start: the daemon then
    uses ranged GETs."""
    lt = import_libtorrent()
    if lt is None:
        log.warning(
            "Storage is S3+BitTorrent or Swift+BitTorrent but libtorrent is not installed "
            "(pip install 'distsync[torrent]'); using ranged GETs"
        )
        return None
    address = settings.address or default_address(endpoint)
    try:
        return Swarm(
            lt, settings, store, secret, prefix, work_dir,
            presigner=presigner, address=address, on_news=on_news,
        )  # fmt: skip
    except SwarmError as exc:
        log.warning("%s; using ranged GETs", exc)
        return None
