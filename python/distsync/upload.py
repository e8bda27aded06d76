"""Upload: encrypt a file as a stream into a new object, then append its manifest to the log."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from distsync.catalog import Catalog
from distsync.config import Config
from distsync.crypto import stream
from distsync.errors import DistsyncError, LocalIOError, UnknownArtifactError, UsageError
from distsync.fsutil import ReadErrors, local_io_error
from distsync.manifest import Manifest, Version, validate_name
from distsync.rollout.plan import MAX_GROUPS, MAX_WAVE_WAIT, Rollout, parse_waves
from distsync.storage.base import ObjectWriter, Store
from distsync.transfer.api import transfer_method

__all__ = ["UploadOutcome", "check_source", "file_sha256", "upload_file", "upload_if_changed"]

log = logging.getLogger(__name__)


def _open_regular(path: Path) -> tuple[BinaryIO, os.stat_result]:
    """Open ``path`` for reading if it is a regular file; never blocks on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise local_io_error("read", path, exc) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise local_io_error("upload", path, IsADirectoryError(0, "not a regular file"))
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb"), info


def check_source(path: Path, name: str | None = None) -> str:
    """What an upload checks before anything is written: the artifact name, and that ``path``
    is a regular file this process can read. Returns the name."""
    name = validate_name(name or path.name)
    handle, _info = _open_regular(path)
    handle.close()
    return name


@dataclass(frozen=True)
class Target:
    """Who an upload is for and in what order (``--to``, ``--waves``): distsync.rollout."""

    to: tuple[str, ...] | None = None
    rollout: Rollout | None = None

    @classmethod
    def from_options(
        cls,
        to: Sequence[str] | None,
        waves: str | Sequence[str] | None,
        wave_wait: float | None,
    ) -> Target:
        """``--to``/``--waves``/``--wave-wait`` (and the module's ``to``/``waves``/
        ``wave_wait``), checked before anything is uploaded: UsageError says what is wrong."""
        groups = None
        if to:
            groups = tuple(dict.fromkeys(group.strip() for group in to))
            if len(groups) > MAX_GROUPS or not all(
                0 < len(g) <= 255 and g.isprintable() for g in groups
            ):
                raise UsageError(f"--to takes 1 to {MAX_GROUPS} group names")
        if wave_wait is not None and waves is None:
            raise UsageError("--wave-wait goes with --waves")
        rollout = None
        if waves is not None:
            try:
                parsed = parse_waves(waves)
            except ValueError as exc:
                raise UsageError(f"--waves: {exc}") from None
            wait = wave_wait or 0.0
            if not 0 <= wait <= MAX_WAVE_WAIT:
                raise UsageError(f"--wave-wait must be from 0 to {MAX_WAVE_WAIT:.0f} seconds")
            rollout = Rollout(parsed, float(wait))
        return cls(groups, rollout)

    def same_as(self, manifest: Manifest) -> bool:
        return manifest.to == self.to and manifest.staged() == self.rollout


def upload_file(
    cfg: Config,
    store: Store,
    catalog: Catalog,
    path: Path,
    *,
    name: str | None = None,
    progress: Callable[[int], None] | None = None,
    target: Target = Target(),
) -> Version:
    name = validate_name(name or path.name)
    cfg.require_signing_key()  # before any object is written: the fleet would refuse it
    handle, info = _open_regular(path)
    with handle:
        object_key = catalog.layout.new_object_key()
        writer: ObjectWriter = store.writer(object_key)
        tap = None
        transfer = transfer_method(cfg)
        if transfer is not None:
            # e.g. the swarm's torrent, hashed as the ciphertext goes out: no second pass.
            size = stream.ciphertext_size(info.st_size, cfg.chunk_size)
            writer = tap = transfer.tap(cfg, writer, object_key, size)
        try:
            result = stream.encrypt_stream(
                cfg.secret,
                ReadErrors(handle, path),  # type: ignore[arg-type]
                writer,  # type: ignore[arg-type]
                chunk_size=cfg.chunk_size,
                progress=progress,
            )
            writer.commit()
        except BaseException:
            writer.abort()
            raise

    def remove_content() -> None:
        """The claim failed and nothing refers to the content: take it back (one line when
        that fails too, naming what is left)."""
        try:
            store.delete(object_key)
        except DistsyncError as exc:
            log.warning("could not remove the content of the failed upload: %s", exc)

    if result.plaintext_size != info.st_size:
        # The file changed while it was read: refuse to publish a torn artifact.
        remove_content()
        raise LocalIOError(f"{path} changed size while it was uploaded; try again")
    assert result.plaintext_sha256 is not None  # encrypt_stream hashes unless told not to
    manifest = Manifest(
        name=name,
        size=result.plaintext_size,
        sha256=result.plaintext_sha256,
        object_key=object_key,
        object_size=result.ciphertext_size,
        chunk_size=cfg.chunk_size,
        uploaded_at=time.time(),
        uploader=cfg.uploader,
        mode=stat.S_IMODE(info.st_mode) & 0o777,
        torrent=tap.manifest_field() if tap is not None else None,
        to=target.to,
        rollout=target.rollout.to_manifest() if target.rollout is not None else None,
        tags_sha256=result.tags_sha256 if cfg.signing_key is not None else None,
    )
    return catalog.append(manifest, undo=remove_content)


@dataclass(frozen=True)
class UploadOutcome:
    """What ``upload_if_changed`` did: ``before`` is the newest version's facts (or None)."""

    changed: bool
    before: dict[str, Any] | None
    after: dict[str, Any]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    except OSError as exc:
        raise local_io_error("read", path, exc) from None
    return digest.hexdigest()


def upload_if_changed(
    cfg: Config,
    store: Store,
    catalog: Catalog,
    path: Path,
    *,
    name: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
    target: Target = Target(),
) -> UploadOutcome:
    """Upload unless the newest version of the name has the same plaintext SHA-256.

    Idempotency rests on the content hash in the (authenticated) manifest, never on an
    ETag or MD5; the same content for other servers or in other waves (``target``) is an
    upload of its own. ``dry_run`` decides without writing anything.
    """
    name = check_source(path, name)
    cfg.require_signing_key()
    try:
        newest = catalog.newest(name)
    except UnknownArtifactError:
        before: dict[str, Any] | None = None
        same_target = True
    else:
        before = newest.facts()
        same_target = target.same_as(newest.manifest)
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise local_io_error("read", path, exc) from None
    differs = before is None or force or before["size"] != size
    if differs and not dry_run:
        # Nothing to compare with (or a size that already differs): the upload's own pass
        # yields the SHA-256, so skip reading and hashing the whole file a second time.
        return UploadOutcome(
            True,
            before,
            upload_file(
                cfg, store, catalog, path, name=name, progress=progress, target=target
            ).facts(),
        )
    sha256 = file_sha256(path)
    if before is not None and before["sha256"] == sha256 and same_target and not force:
        return UploadOutcome(False, before, before)
    if dry_run:
        return UploadOutcome(
            True, before, {"name": name, "version": None, "size": size, "sha256": sha256}
        )
    version = upload_file(cfg, store, catalog, path, name=name, progress=progress, target=target)
    return UploadOutcome(True, before, version.facts())
