"""The ``distsync`` command line: parse arguments, call the engine, turn errors into one line.

Every subcommand takes ``-c PATH`` (also ``--config`` and the Go original's ``-conf``).
The handlers stay thin: the work lives in the engine modules that the Ansible modules call too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import select
import shutil
import signal
import stat
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from distsync import __version__
from distsync.catalog import Catalog, Rejected
from distsync.config import Config, default_config_path, load_config
from distsync.crypto import codec
from distsync.errors import DistsyncError, LocalIOError, UsageError
from distsync.fsutil import ReadErrors, atomic_output, local_io_error
from distsync.logorder import parse_version_id, version_id
from distsync.manifest import Version
from distsync.progress import Progress, human_bytes
from distsync.storage import open_store

if TYPE_CHECKING:  # only for annotations of the fleet-status code below
    from distsync.status.fleet import FleetView, Verdict
    from distsync.storage.base import Store
    from distsync.upload import Target

__all__ = ["main"]

log = logging.getLogger("distsync")

Handler = Callable[[argparse.Namespace], int]


def _config(args: argparse.Namespace) -> Config:
    path = args.config or default_config_path(args.command)
    return load_config(path)


@contextlib.contextmanager
def _open_input(name: str) -> Iterator[BinaryIO]:
    if name == "-":
        yield ReadErrors(sys.stdin.buffer, "standard input")  # type: ignore[misc]
        return
    try:
        handle = open(name, "rb")  # noqa: SIM115 - closed below, errors translated
    except OSError as exc:
        raise local_io_error("read", name, exc) from None
    with handle:
        yield ReadErrors(handle, name)  # type: ignore[misc]


def _input_size(name: str) -> int | None:
    try:
        return None if name == "-" else os.stat(name).st_size
    except OSError:
        return None


def _write_output(name: str, produce: Callable[[BinaryIO], object]) -> None:
    """Run ``produce(handle)``; only a complete result ever appears at ``name``.

    What ``name`` is decides, never where it is: a regular file (or a new one), under /dev/shm
    or anywhere, is replaced atomically, 0600 (through a symlink, the file it points to).
    Standard output (``-``), a character device (/dev/null, a terminal) and a FIFO cannot be
    renamed over: the result is staged in a temp file and written to them only once complete,
    so nothing unverified reaches them either. Anything else (a directory) is refused.
    """
    if name == "-":
        _write_staged(produce, sys.stdout.buffer, "standard output")
        return
    try:
        mode: int | None = os.stat(name).st_mode
    except FileNotFoundError:
        mode = None  # a new file (or a symlink to one)
    except OSError as exc:
        raise local_io_error("write", name, exc) from None
    if mode is None or stat.S_ISREG(mode):
        with atomic_output(Path(os.path.realpath(name)), mode=0o600) as handle:
            produce(handle)
        return
    if not (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
        raise LocalIOError(f"cannot write {name}: {_not_writable(mode)}")
    with tempfile.TemporaryFile() as staged:
        produce(staged)
        try:
            # No O_CREAT, no O_TRUNC: into the device or FIFO that stands there, or nothing.
            fd = os.open(name, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise local_io_error("write", name, exc) from None
        with open(fd, "wb") as target:
            if stat.S_ISREG(os.fstat(fd).st_mode):  # replaced by a regular file meanwhile
                raise LocalIOError(f"cannot write {name}: it became a regular file")
            _copy_staged(staged, target, name)


def _not_writable(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "is a directory"
    return "not a regular file, a character device or a FIFO"


def _write_staged(produce: Callable[[BinaryIO], object], target: BinaryIO, label: str) -> None:
    with tempfile.TemporaryFile() as staged:
        produce(staged)
        _copy_staged(staged, target, label)


def _copy_staged(staged: BinaryIO, target: BinaryIO, label: str) -> None:
    staged.seek(0)
    try:
        shutil.copyfileobj(staged, target, 1 << 20)
        target.flush()
    except OSError as exc:
        if isinstance(exc, BrokenPipeError) and target is sys.stdout.buffer:
            raise  # the reader of standard output went away: main() ends quietly
        raise local_io_error("write", label, exc) from None


def cmd_encrypt(args: argparse.Namespace) -> int:
    cfg = _config(args)
    progress = Progress("encrypt", _input_size(args.input))
    with _open_input(args.input) as src:
        _write_output(
            args.output,
            lambda dst: codec.encrypt_as(
                args.format, cfg.secret, src, dst, chunk_size=cfg.chunk_size, progress=progress
            ),
        )
    progress.close()
    return 0


def cmd_decrypt(args: argparse.Namespace) -> int:
    cfg = _config(args)
    progress = Progress("decrypt", None)
    with _open_input(args.input) as src:
        _write_output(
            args.output, lambda dst: codec.decrypt_any(cfg.secret, src, dst, progress=progress)
        )
    progress.close()
    return 0


def cmd_upload(args: argparse.Namespace) -> int:
    from distsync.upload import check_source, upload_if_changed

    cfg = _config(args)
    if args.name and len(args.files) > 1:
        raise UsageError("--name goes with a single file")
    cfg.require_signing_key()  # a server's config cannot publish: say so before anything
    if args.keep is not None and args.keep < 1:
        raise UsageError("--keep must be at least 1 (the newest version always stays)")
    _check_wait_options(args)
    target = _target(args)
    uploaded: list[tuple[str, int]] = []  # (name, version) to wait for
    # Every file is checked before anything is written: no half-done batch.
    named = [(Path(name), check_source(Path(name), args.name)) for name in args.files]
    catalog = Catalog.open(cfg)
    for path, name in named:
        progress = Progress(f"upload {name}", _input_size(str(path)))
        outcome = upload_if_changed(
            cfg,
            catalog.store,
            catalog,
            path,
            name=name,
            force=args.force,
            progress=progress,
            target=target,
        )
        progress.close()
        facts = outcome.after
        if not outcome.changed:
            print(
                f"distsync: {name} is unchanged: version {facts['version']} has the same "
                "content; not uploaded (--force uploads it anyway)",
                file=sys.stderr,
            )
        print(
            f"{facts['name']}\tversion {facts['version']}\t{facts['size']} bytes"
            f"\tsha256 {facts['sha256']}"
        )
        seq = parse_version_id(str(facts["version"]))
        if seq is not None:  # always: the id this upload (or the last) was given
            uploaded.append((facts["name"], seq))
        if args.keep is not None:
            _prune_after_upload(cfg, catalog, name, args.keep)
    if args.wait:
        _wait_for_fleet(cfg, catalog, uploaded, args)
    return 0


def _target(args: argparse.Namespace) -> Target:
    from distsync.upload import Target

    return Target.from_options(args.to, args.waves, args.wave_wait)


def _prune_after_upload(cfg: Config, catalog: Catalog, name: str, keep: int) -> None:
    from distsync.retention import prune

    plan = prune(cfg, catalog, keep=keep, names=[name])
    for v in plan.delete:
        print(
            f"distsync: pruned {name} version {v.version_id} "
            f"({human_bytes(v.manifest.object_size)})",
            file=sys.stderr,
        )
    for v, why in plan.kept_for_fleet:
        print(f"distsync: kept {name} version {v.version_id}: {why}", file=sys.stderr)


def _check_wait_options(args: argparse.Namespace) -> None:
    """Before uploading anything: --servers and --all imply --wait."""
    args.wait = args.wait or args.all or args.servers is not None
    if args.servers is not None and args.servers < 1:
        raise UsageError("--servers must be at least 1")
    if not 0 < args.timeout <= 7 * 86400:
        raise UsageError("--timeout must be between 0 and 604800 seconds")


def _wait_for_fleet(
    cfg: Config, catalog: Catalog, versions: list[tuple[str, int]], args: argparse.Namespace
) -> None:
    """``upload --wait``: until the servers report each version installed (exit 6 if not)."""
    from distsync.rollout.command import halted_check
    from distsync.status import wait_for_upload

    store = catalog.store
    deadline = time.monotonic() + args.timeout
    on_terminal = sys.stderr.isatty()
    for name, seq in versions:

        def show(verdict: Verdict, name: str = name) -> None:
            if on_terminal:
                line = f"\r{name}: {verdict.reached}/{verdict.wanted} servers"
                print(line, end="", file=sys.stderr, flush=True)

        try:
            verdict = wait_for_upload(
                cfg,
                store,
                name,
                seq,
                servers=args.servers,
                timeout=max(deadline - time.monotonic(), 0.5),
                progress=show,
                halted=halted_check(cfg, catalog, catalog.read(seq)),
            )
        finally:
            if on_terminal:
                print(file=sys.stderr)
        print(verdict.message)


def cmd_status(args: argparse.Namespace) -> int:
    from distsync.status import read_fleet
    from distsync.status.table import render

    cfg = _config(args)
    store = open_store(cfg)
    view = read_fleet(cfg, store)
    seq = None
    if args.version is not None:
        seq = parse_version_id(args.version)
        if not args.name or seq is None:
            raise UsageError(
                "--version ID goes with a NAME, and is a version id as `distsync list` shows "
                "(e.g. 42 or 42.9f3ac2e07b5d)"
            )
    if args.json:
        print(json.dumps(view.to_json(args.name, seq), indent=2, sort_keys=True))
        return 0
    if not view.servers:
        print(f"no server has reported status to {cfg.storage_bucket} yet", file=sys.stderr)
        return 0
    names = [args.name] if args.name else view.names()
    targets = {name: seq if seq is not None else view.target(name) for name in names}
    for line in render(view, names, targets):
        print(line)
    for line in _rollout_lines(cfg, store, view, targets):
        print(line)
    return 0


def _rollout_lines(
    cfg: Config, store: Store, view: FleetView, targets: dict[str, int | None]
) -> list[str]:
    """'app.tar.gz version 42: halted at wave 1: srv-3 failed: <reason>' for each version
    shown whose staged rollout is halted."""
    from distsync.layout import Layout
    from distsync.rollout.command import view_of

    # Each manifest read is authenticated on its own: no store record check (and none of
    # its warnings) for a command that only reads.
    catalog = Catalog(store, Layout(cfg.prefix), cfg.secret, trust=cfg.trust)
    lines = []
    for name, seq in targets.items():
        if seq is None:
            continue
        try:
            version = catalog.read(seq)
        except DistsyncError:
            continue  # not in the log (any more): nothing to say about its rollout
        if version.manifest.name != name or version.manifest.staged() is None:
            continue
        try:
            halted = view_of(cfg, catalog, version, view).halted()
        except DistsyncError as exc:  # a halt record that does not verify: say so, go on
            halted = f"rollout unknown: {exc}"
        if halted is not None:
            lines.append(f"{name} version {version_id(seq)}: {halted}")
    return lines


def cmd_rollout(args: argparse.Namespace) -> int:
    from distsync.rollout.command import rollout_command

    if args.halt and args.resume:
        raise UsageError("--halt and --continue go one at a time")
    for line in rollout_command(
        _config(args), args.name, as_json=args.json, halt=args.halt, resume=args.resume
    ):
        print(line)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from distsync.retention import present_objects

    cfg = _config(args)
    catalog = Catalog.open(cfg)
    entries = list(catalog.entries_after(0))
    versions = sorted(
        (entry for entry in entries if isinstance(entry, Version)),
        key=lambda version: version.seq,
        reverse=True,
    )
    rejected = [entry for entry in entries if isinstance(entry, Rejected)]
    if rejected:
        # Forged, tampered, or signed by a key this config does not trust: one line for all.
        print(
            f"distsync: {len(rejected)} log "
            f"{'entry fails' if len(rejected) == 1 else 'entries fail'} verification and "
            f"{'is' if len(rejected) == 1 else 'are'} not shown (the first: {rejected[0].reason})",
            file=sys.stderr,
        )
    if args.name:
        versions = [v for v in versions if v.manifest.name == args.name]
    # One listing of the contents tells which versions were pruned; an identity that may
    # not list them (a setup older than retention) sees every version, as before.
    present = present_objects(catalog) if versions else set()
    gone = set() if present is None else {
        v.seq for v in versions if v.manifest.object_key not in present
    }
    if present is None and args.all:
        print(
            "distsync: note: this identity may not list the contents, so pruned versions "
            "cannot be told (re-run `distsync setup` with the same --setup-id)",
            file=sys.stderr,
        )
    if not args.all:
        versions = [v for v in versions if v.seq not in gone]
    if args.json:
        rows = [v.facts() for v in versions]
        if args.all:
            for row, v in zip(rows, versions):
                row["pruned"] = v.seq in gone
        print(json.dumps(rows, indent=2))
        return 0
    if not versions:
        print(f"no artifacts in {catalog.store.description}", file=sys.stderr)
        return 0
    width = max(8, *(len(v.version_id) for v in versions))
    print(f"{'NAME':<32} {'VERSION':>{width}} {'SIZE':>10}  {'UPLOADED (UTC)':<19}  SHA256")
    for v in versions:
        m = v.manifest
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(m.uploaded_at))
        print(
            f"{m.name:<32} {v.version_id:>{width}} {human_bytes(m.size):>10}  {when:<19}  "
            f"{m.sha256[:12]}" + ("  (pruned)" if v.seq in gone else "")
        )
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from distsync.retention import parse_duration, prune, prune_orphans

    if args.keep is None and not args.orphans:
        raise UsageError("prune needs --keep N, --orphans, or both")
    if args.names and args.keep is None:
        raise UsageError("NAME... goes with --keep N")
    older_than = parse_duration(args.older_than) if args.older_than is not None else None
    if older_than is not None and args.keep is None:
        raise UsageError("--older-than goes with --keep N")
    orphan_age = parse_duration(args.orphan_age)
    cfg = _config(args)
    catalog = Catalog.open(cfg)
    verb = "would delete" if args.dry_run else "deleted"
    report: dict[str, object] = {"dry_run": args.dry_run}
    lines: list[str] = []
    total = 0
    if args.keep is not None:
        deleted: list[Version] = []
        try:
            plan = prune(
                cfg,
                catalog,
                keep=args.keep,
                names=args.names,
                older_than=older_than,
                dry_run=args.dry_run,
                deleted=deleted,
            )
        except DistsyncError as exc:
            if deleted:  # say what is gone already; running it again finishes the job
                done = ", ".join(f"{v.manifest.name} {v.version_id}" for v in deleted)
                exc.args = (f"{exc} (deleted before that: {done})",)
            raise
        for v in plan.delete:
            lines.append(
                f"{verb} {v.manifest.name} version {v.version_id} "
                f"({human_bytes(v.manifest.object_size)})"
            )
        for v, why in plan.kept_for_fleet:
            lines.append(f"kept {v.manifest.name} version {v.version_id}: {why}")
        total += plan.bytes
        report["deleted"] = [
            {**v.facts(), "stored_bytes": v.manifest.object_size} for v in plan.delete
        ]
        report["kept_for_fleet"] = [
            {"name": v.manifest.name, "version": v.version_id, "reason": str(why)}
            for v, why in plan.kept_for_fleet
        ]
    if args.orphans:
        orphans = prune_orphans(catalog, min_age=orphan_age, dry_run=args.dry_run)
        for item in orphans.delete:
            lines.append(f"{verb} orphaned content {item.key} ({human_bytes(item.size)})")
        if orphans.too_young:
            lines.append(
                f"left {len(orphans.too_young)} unreferenced contents younger than "
                f"{args.orphan_age} alone (an upload may be under way)"
            )
        total += orphans.bytes
        report["orphans"] = [{"key": o.key, "stored_bytes": o.size} for o in orphans.delete]
        report["orphans_too_young"] = len(orphans.too_young)
    report["bytes"] = total
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for line in lines:
        print(line)
    print(f"total: {verb} {human_bytes(total)} ({total} bytes)")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from distsync.transfer.fetch import fetch_version

    cfg = _config(args)
    catalog = Catalog.open(cfg)
    store = catalog.store
    version = catalog.find(args.name, args.version) if args.version else catalog.newest(args.name)
    out_dir = Path(args.output_dir)
    if not out_dir.is_dir():
        raise UsageError(f"{out_dir} is not a directory")
    progress = Progress(f"download {args.name}", version.manifest.size)
    result = fetch_version(
        store, cfg.secret, version, out_dir / version.manifest.name, progress=progress
    )
    progress.close()
    print(
        f"{result.path}\tversion {version.version_id}\t{result.size} bytes\tsha256 {result.sha256}"
    )
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from distsync.crypto.signing import SigningKey, format_key

    if args.action == "new":
        if args.config:
            raise UsageError("keys new reads no config (-c goes with keys show)")
        key = SigningKey.generate()
        public = format_key(key.public_key)
        if args.json:
            print(json.dumps({"signing_key": key.text(), "public_key": public}))
            return 0
        print(
            "# For the uploader's config only (e.g. CI): whoever holds it can publish to the "
            "fleet.\n"
            f'SigningKey = "{key.text()}"\n'
            "# For every config that verifies uploads: the servers' (the role's\n"
            "# distsync_daemon_trusted_signers), and uploaders that list other uploaders' work.\n"
            f'TrustedSigners = ["{public}"]'
        )
        return 0
    cfg = _config(args)
    if cfg.signing_key is None:
        raise cfg.error(
            "SigningKey", "is not set: this config cannot sign (`distsync keys new` makes a key)"
        )
    print(format_key(cfg.signing_key.public_key))
    return 0


def cmd_daemon(args: argparse.Namespace) -> int:
    from distsync.daemon import Daemon

    cfg = _config(args)
    return Daemon(cfg, open_store(cfg)).run(once=args.once)


def cmd_releases(args: argparse.Namespace) -> int:
    from distsync.release.commands import format_releases, select
    from distsync.release.report import describe

    cfg = _config(args)
    rows = [describe(spec, cfg.pins) for spec in select(cfg, args.name)]
    print(format_releases(rows, args.json))
    return 0


def cmd_rollback_or_resume(args: argparse.Namespace) -> int:
    from distsync.release.commands import format_releases, send_request

    cfg = _config(args)
    to = getattr(args, "to", None)
    position = parse_version_id(to) if to is not None else None
    if to is not None and position is None:
        raise UsageError(
            f"--to {to!r}: not a version id (those `distsync releases` shows, e.g. 42 or "
            "42.9f3ac2e07b5d)"
        )
    timeout = args.wait
    if timeout is None:  # a poll, a health check, and time to spare
        timeout = (
            cfg.poll_interval
            + cfg.poll_jitter
            + 60
            + max((spec.health_timeout for spec in cfg.releases), default=0)
        )
    row = send_request(
        cfg,
        args.name,
        args.command,
        position,
        timeout,
        say=lambda line: print(f"distsync: {line}", file=sys.stderr),
    )
    print(format_releases([row], args.json))
    return 0


def cmd_setup(args: argparse.Namespace) -> int:
    from distsync.provision import (
        DestroyOptions,
        SetupOptions,
        SwiftSetup,
        fill_in_interactively,
        run_destroy,
        run_setup,
    )
    from distsync.provision.swift import swift_setup_from_environment

    interactive = not args.non_interactive and sys.stdin.isatty()

    def warn(line: str) -> None:
        print(f"distsync: {line}", file=sys.stderr)

    if args.delete_bucket and not args.destroy:
        raise UsageError("--delete-bucket goes with --destroy ID")
    if args.destroy and args.storage in ("local", "swift", "swift+bittorrent"):
        raise UsageError("--destroy removes an S3 setup's IAM users (not local or swift)")
    if args.destroy:
        destroy = DestroyOptions(
            setup_id=args.destroy,
            region=args.region,
            endpoint=args.endpoint,
            profile=args.profile,
            bucket=args.bucket,
            delete_bucket=args.delete_bucket,
        )
        if args.delete_bucket and interactive:
            answer = input(
                f"Delete the bucket of setup {args.destroy} and EVERY version of everything "
                "in it? Type the setup id to confirm: "
            ).strip()
            if answer != args.destroy:
                raise UsageError("not confirmed; nothing was removed")
        outcome = run_destroy(destroy, say=print)
        print("removed: " + (", ".join(outcome.removed) if outcome.removed else "nothing"))
        return 0

    options = SetupOptions(
        storage=args.storage,
        bucket=args.bucket,
        region=args.region,
        endpoint=args.endpoint,
        output_dir=args.output_dir,
        upload_config=args.upload_config,
        daemon_config=args.daemon_config,
        force=args.force,
        setup_id=args.setup_id,
        prefix=args.prefix,
        profile=args.profile,
        require_conditional_log=args.require_conditional_log,
        no_iam=args.no_iam,
        record_expiry_days=args.record_expiry_days,
    )
    # Swift: names from flags, secrets from the environment (or a hidden prompt), never argv.
    options.swift = SwiftSetup(auth_url=args.auth_url, daemon_username=args.daemon_user)
    swift_setup_from_environment(options.swift, os.environ)
    if (args.auth_url or args.daemon_user) and options.storage not in (
        None,
        "swift",
        "swift+bittorrent",
    ):
        raise UsageError("--auth-url and --daemon-user go with --storage swift")
    if options.no_iam and options.storage not in (None, "s3", "s3+bittorrent"):
        raise UsageError("--no-iam goes with --storage s3")
    if options.record_expiry_days is not None and options.storage in ("swift", "swift+bittorrent"):
        raise UsageError("--record-expiry-days goes with --storage s3 (it is an S3 lifecycle rule)")
    s3_only = (options.setup_id, options.profile, options.prefix, options.no_iam)
    if any(s3_only) or options.record_expiry_days:
        if options.storage == "local":
            raise UsageError(
                "--setup-id, --profile, --prefix, --no-iam and --record-expiry-days "
                "go with --storage s3"
            )
        options.storage = options.storage or "s3"  # these only mean something for S3
    if interactive:
        fill_in_interactively(options)
    result = run_setup(options, say=print, warn=warn)
    print(f"storage: {result.storage} ({result.bucket})")
    if result.configs_written:
        print(f"wrote {result.upload_config} (for the uploader, e.g. your CI)")
        print(f"wrote {result.daemon_config} (for the servers running `distsync daemon`)")
    if result.public_key:
        print(
            f"uploads are signed: the servers trust {result.public_key} "
            "(the public key of the uploader's SigningKey)"
        )
    for note in result.notes:
        print(f"note: {note}")
    if result.setup_id:
        state = "created or updated" if result.changed else "already in place; nothing changed"
        print(f"setup {result.setup_id}: {state}")
        print(
            f"remove it with: distsync setup --destroy {result.setup_id} [--delete-bucket]"
            + (f" --endpoint {args.endpoint}" if args.endpoint else "")
        )
    return 0


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        "-conf",
        metavar="PATH",
        help="configuration file (default: ~/.distsyncd for daemon, ~/.distsync otherwise)",
    )


def _add_target_options(upload: argparse.ArgumentParser) -> None:
    group = upload.add_argument_group("targeting and staged rollout (docs/rollout.md)")
    group.add_argument(
        "--to",
        action="append",
        metavar="GROUP",
        help="only servers in this group install it (repeatable: any of the groups)",
    )
    group.add_argument(
        "--waves",
        metavar="SIZES",
        help="install in waves of these cumulative sizes, e.g. 1,10%%,50%%,100%%",
    )
    group.add_argument(
        "--wave-wait",
        type=float,
        metavar="SECONDS",
        help="with --waves: wait this long after a wave is healthy before the next",
    )


def _add_wait_options(upload: argparse.ArgumentParser) -> None:
    wait = upload.add_argument_group("waiting for the fleet (exit 6 if it does not get there)")
    wait.add_argument(
        "--wait", action="store_true", help="return once the servers report it installed"
    )
    count = wait.add_mutually_exclusive_group()
    count.add_argument(
        "--servers", type=int, metavar="N", help="with --wait: until N servers have it"
    )
    count.add_argument(
        "--all",
        action="store_true",
        help="with --wait: until every live server has it (the default)",
    )
    wait.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="with --wait: give up after this long (default 600)",
    )


class _VersionAction(argparse.Action):
    """``--version``: the engine's version, then every installed plugin and its version
    (loaded only now: other commands import only the plugins their config names)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from distsync.plugins import describe_installed

        lines = describe_installed()
        print("\n".join([f"distsync {__version__}", "plugins:", *lines]))
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distsync",
        description="Move build artifacts from CI to a fleet through an object store, "
        "encrypted end to end.",
    )
    parser.add_argument(
        "--version", action=_VersionAction, help="show the version and the installed plugins"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    enc = sub.add_parser("encrypt", help="encrypt a file offline (no store involved)")
    _add_config_option(enc)
    enc.add_argument("input", help="file to encrypt, or - for standard input")
    enc.add_argument("-o", "--output", required=True, help="where to write, or - for stdout")
    enc.add_argument(
        "--format", choices=codec.FORMATS, default="v3", help="v3 (default) or the Go distsync01"
    )
    enc.set_defaults(handler=cmd_encrypt)

    dec = sub.add_parser("decrypt", help="verify and decrypt a file offline (format detected)")
    _add_config_option(dec)
    dec.add_argument("input", help="file to decrypt, or - for standard input")
    dec.add_argument("-o", "--output", required=True, help="where to write, or - for stdout")
    dec.set_defaults(handler=cmd_decrypt)

    setup = sub.add_parser(
        "setup",
        help="create the store and write both configs",
        description="Create the store (for S3: a bucket and two least-privilege IAM users) "
        "and write the uploader's and the daemon's configs. For S3, setup itself uses boto3's "
        "standard credentials (environment, shared files, instance profile) or --profile.",
    )
    setup.add_argument(
        "--storage",
        type=str.lower,
        metavar="STORAGE",
        help="local, s3, s3+bittorrent, swift, swift+bittorrent, or an installed storage "
        "plugin's name (distsync --version lists them)",
    )
    setup.add_argument(
        "--bucket",
        help="local: the directory; S3: bucket name (default distsync-SETUP_ID); "
        "Swift: the container (default distsync-RANDOM)",
    )
    setup.add_argument("--region", help="AWS region (default us-east-1)")
    setup.add_argument("--endpoint", help="S3/IAM-compatible endpoint URL (default AWS)")
    setup.add_argument("--output-dir", help="where the daemon installs artifacts")
    setup.add_argument("--upload-config", default="~/.distsync", metavar="PATH")
    setup.add_argument("--daemon-config", default="~/.distsyncd", metavar="PATH")
    setup.add_argument("--force", action="store_true", help="replace existing config files")
    setup.add_argument("--non-interactive", action="store_true", help="never prompt")
    s3 = setup.add_argument_group("S3")
    s3.add_argument(
        "--setup-id",
        metavar="ID",
        help="names the bucket and the users (default: new random id); re-running with the "
        "same id changes nothing that is already right",
    )
    s3.add_argument("--profile", help="AWS profile that setup itself runs as")
    s3.add_argument("--prefix", help="key prefix in the bucket (default distsync/v3/)")
    s3.add_argument(
        "--require-conditional-log",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the uploader may only create log entries, never overwrite them (the "
        "s3:if-none-match condition; default on for AWS, off with --endpoint)",
    )
    s3.add_argument(
        "--no-iam",
        action="store_true",
        help="the endpoint speaks S3 but has no IAM (Swift's S3 API, R2, ...): create the "
        "bucket if needed and give both configs the keys setup runs with",
    )
    s3.add_argument(
        "--record-expiry-days",
        type=int,
        metavar="DAYS",
        help="expire the status and peer records of servers that stopped rewriting them "
        "after this many days (a lifecycle rule; default 7)",
    )
    s3.add_argument(
        "--destroy",
        metavar="ID",
        help="remove setup ID's IAM users, keys and policies (the bucket stays)",
    )
    s3.add_argument(
        "--delete-bucket",
        action="store_true",
        help="with --destroy: also delete the bucket and every version of its contents",
    )
    swift = setup.add_argument_group(
        "Swift",
        "setup logs in as the identity the uploader keeps: ST_AUTH, ST_USER, ST_KEY (tempauth, "
        "Rackspace) or OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME, "
        "OS_USER_DOMAIN_NAME, OS_PROJECT_DOMAIN_NAME, OS_REGION_NAME (Keystone v3) from the "
        "environment (docs/setup-swift.md)",
    )
    swift.add_argument("--auth-url", help="the login URL (default $ST_AUTH or $OS_AUTH_URL)")
    swift.add_argument(
        "--daemon-user",
        metavar="NAME",
        help="a second identity for the daemons, made read-only by container ACLs; its key "
        "or password comes from $DISTSYNC_SWIFT_DAEMON_KEY (or a prompt)",
    )
    setup.set_defaults(handler=cmd_setup)

    upload = sub.add_parser("upload", help="encrypt, upload and announce files")
    _add_config_option(upload)
    upload.add_argument("files", nargs="+", metavar="FILE")
    upload.add_argument("--name", help="artifact name (default: the file's base name)")
    upload.add_argument(
        "--force",
        action="store_true",
        help="upload even when the newest version of the name has the same content",
    )
    _add_target_options(upload)
    upload.add_argument(
        "--keep",
        type=int,
        metavar="N",
        help="then delete the stored contents of all but the newest N versions of the name "
        "(as `distsync prune NAME --keep N`)",
    )
    _add_wait_options(upload)
    upload.set_defaults(handler=cmd_upload)

    status = sub.add_parser("status", help="which server has which version (status records)")
    _add_config_option(status)
    status.add_argument("name", nargs="?", help="only this artifact name")
    status.add_argument("--version", metavar="ID", help="with NAME: compare against this version")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=cmd_status)

    roll = sub.add_parser(
        "rollout", help="the waves of the newest version of a name; halt or continue them"
    )
    _add_config_option(roll)
    roll.add_argument("name", metavar="NAME")
    roll.add_argument("--json", action="store_true")
    roll.add_argument(
        "--halt", action="store_true", help="stop the rollout: no further server installs it"
    )
    roll.add_argument("--continue", dest="resume", action="store_true", help="lift a --halt")
    roll.set_defaults(handler=cmd_rollout)

    lst = sub.add_parser("list", help="list artifacts and versions, newest first")
    _add_config_option(lst)
    lst.add_argument("name", nargs="?", help="only versions of this name")
    lst.add_argument("--all", action="store_true", help="also versions pruned from the store")
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.set_defaults(handler=cmd_list)

    prune = sub.add_parser(
        "prune",
        help="delete the stored contents of old versions (the log entries stay)",
        description="Delete the stored contents of all but the newest N versions of each name "
        "(or of the NAMEs given). A version a server reports installed or pinned in its status "
        "record is never deleted. Pruned versions show in `list --all`.",
    )
    _add_config_option(prune)
    prune.add_argument("names", nargs="*", metavar="NAME", help="only these names")
    prune.add_argument("--keep", type=int, metavar="N", help="versions of each name to keep")
    prune.add_argument(
        "--older-than",
        metavar="DURATION",
        help="only versions uploaded longer ago than this (e.g. 36h, 7d, 2w)",
    )
    prune.add_argument(
        "--orphans",
        action="store_true",
        help="also delete contents that no log entry names (a failed upload's)",
    )
    prune.add_argument(
        "--orphan-age",
        default="24h",
        metavar="DURATION",
        help="with --orphans: only contents older than this (default 24h: an upload may be "
        "under way)",
    )
    prune.add_argument("--dry-run", action="store_true", help="say what would go; delete nothing")
    prune.add_argument("--json", action="store_true", help="machine-readable output")
    prune.set_defaults(handler=cmd_prune)

    down = sub.add_parser("download", help="fetch, verify and decrypt one artifact")
    _add_config_option(down)
    down.add_argument("name")
    down.add_argument("-o", "--output-dir", default=".", metavar="DIR")
    down.add_argument("--version", metavar="ID", help="a version id from `distsync list`")
    down.set_defaults(handler=cmd_download)

    keys = sub.add_parser(
        "keys",
        help="signing keys: make a new pair, or show a config's public key",
        description="Uploads are signed with the uploader's SigningKey; servers install only "
        "what one of their TrustedSigners signed. `keys new` prints a new pair as config "
        "lines; `keys show -c CONF` prints the public key of CONF's SigningKey.",
    )
    keys.add_argument("action", choices=("new", "show"))
    _add_config_option(keys)
    keys.add_argument("--json", action="store_true", help="keys new: machine-readable output")
    keys.set_defaults(handler=cmd_keys)

    daemon = sub.add_parser("daemon", help="install new artifacts as they appear")
    _add_config_option(daemon)
    daemon.add_argument("--once", action="store_true", help="run one cycle and exit")
    daemon.set_defaults(handler=cmd_daemon)
    _add_release_commands(sub)
    return parser


def _add_release_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The [[Release]] commands; they read the daemon's configuration (~/.distsyncd)."""
    rel = sub.add_parser("releases", help="the kept releases: current, failed, held")
    _add_config_option(rel)
    rel.add_argument("name", nargs="?", help="a Match pattern, a Dir, or an artifact name")
    rel.add_argument("--json", action="store_true", help="machine-readable output")
    rel.set_defaults(handler=cmd_releases)
    for command, text in (
        ("rollback", "switch current to the previous kept release (or --to VERSION) and hold it"),
        ("resume", "lift a rollback's hold: the newest healthy version is installed again"),
    ):
        parser = sub.add_parser(
            command,
            help=text,
            description=text + ". The running daemon applies it within a poll interval.",
        )
        _add_config_option(parser)
        parser.add_argument("name", help="a Match pattern, a Dir, or an artifact name")
        if command == "rollback":
            parser.add_argument("--to", metavar="VERSION", help="a version id to switch to")
        parser.add_argument(
            "--wait",
            type=float,
            metavar="SECONDS",
            help="how long to wait for the daemon's answer (default: a poll interval, the "
            "health timeout and a minute)",
        )
        parser.add_argument("--json", action="store_true", help="machine-readable output")
        parser.set_defaults(handler=cmd_rollback_or_resume)


# A closed standard output ends a command the way it ends other Unix tools: 128 + SIGPIPE.
EXIT_CLOSED_OUTPUT = 128 + signal.SIGPIPE


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit status.

    When the reader of standard output goes away (``distsync list | head -1``), the command
    ends quietly with status 141, like ``ls | head -1`` does: no message, no traceback.
    """
    try:
        try:
            return _run(argv)
        except SystemExit as exc:
            # How argparse ends --help and --version, after ignoring a failed write itself.
            if exc.code in (0, None) and _stdout_gone():
                return _closed_output()
            raise
        finally:
            sys.stdout.flush()  # a closed pipe shows here rather than at interpreter exit
    except BrokenPipeError:
        return _closed_output()


def _closed_output() -> int:
    # What is still buffered goes nowhere, so the flush at exit cannot fail again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_CLOSED_OUTPUT


def _stdout_gone() -> bool:
    """Whether standard output is a pipe or socket whose reader has gone."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        events = poller.poll(0)
    except (OSError, ValueError):
        return False
    return any(event & (select.POLLERR | select.POLLHUP) for _fd, event in events)


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="distsync: %(levelname)s: %(message)s"
        if sys.stderr.isatty()
        else "%(asctime)s distsync %(levelname)s %(message)s",
    )
    # boto3 announces where it found credentials at INFO: noise on a user's terminal.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "swiftclient", "keystoneauth"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return 2
    handler: Handler = args.handler
    try:
        return handler(args)
    except DistsyncError as exc:
        print(f"distsync: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("distsync: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if isinstance(exc, BrokenPipeError) and _stdout_gone():
            raise  # main() ends quietly
        if args.debug:
            traceback.print_exc()
        print(
            f"distsync: internal error: {type(exc).__name__}: {exc} (--debug shows details)",
            file=sys.stderr,
        )
        return 70


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
