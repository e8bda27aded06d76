"""Setup's side of the store record (``distsync.store_record``): refuse to replace one by
accident, find out what the store can do (``probe_capabilities``), and write a new record
together with the configs that hold its secret."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from distsync.crypto.secret import parse_secret
from distsync.errors import NotFoundError, UsageError
from distsync.layout import Layout
from distsync.provision.configs import write_pair
from distsync.provision.options import Say, SetupOptions
from distsync.storage.base import Store
from distsync.storage.probe import ProbeInconclusive, Verdict, probe_conditional_create
from distsync.store_record import TempUrlGrant, new_store_record, seal_store_record

__all__ = ["probe_capabilities", "refuse_existing_store", "write_configs_and_record"]

_VERDICT_SAYS = {
    Verdict.ATOMIC: "atomic: uploads claim log entries with a conditional create",
    Verdict.NOT_ATOMIC: (
        "not atomic (two racing creates both succeeded): uploads write log entries of "
        "their own (docs/FORMAT.md)"
    ),
    Verdict.NO_CONDITIONAL_CREATE: (
        "refused or ignored: uploads write log entries of their own (docs/FORMAT.md)"
    ),
}


def probe_capabilities(store: Store, layout: Layout, say: Say) -> dict[str, Any]:
    """What the store record says the store can do, found by asking the store itself
    (``storage.probe``: racing conditional creates), never by its name.

    A probe that proves nothing chooses the log that needs no atomic create: it is right on
    every store, where the other layout loses uploads on a store that is not atomic.
    """
    try:
        verdict = probe_conditional_create(store, layout.prefix)
    except ProbeInconclusive as exc:
        say(f"conditional create: {exc}; uploads write log entries of their own")
        return {"atomic_create": False}
    say(f"conditional create: {_VERDICT_SAYS[verdict]}")
    return {"atomic_create": verdict is Verdict.ATOMIC}


def refuse_existing_store(options: SetupOptions, store: Store, layout: Layout) -> None:
    """A store record there means a store whose configs are in use somewhere: a new one would
    cut them all off (exit 3, "a different SharedSecret"), so only with --force."""
    if options.force:
        return
    try:
        store.get(layout.store_record)
    except NotFoundError:
        return
    raise UsageError(
        f"{store.description} already holds a distsync store under {layout.prefix}: pass "
        "--force to replace it with a new one (the configs of the old one stop working)"
    )


def write_configs_and_record(
    options: SetupOptions,
    store: Store,
    layout: Layout,
    capabilities: Mapping[str, Any],
    *pairs: tuple[Path, dict[str, Any]],
    temp_url: TempUrlGrant | None = None,
) -> None:
    """Write the configs, then the store record sealed under their SharedSecret.

    In that order: a record whose secret no config holds would lock every client out. When
    the record cannot be written the configs go too, so nothing is left half set up.
    """
    secret = parse_secret(pairs[0][1]["SharedSecret"])
    record = new_store_record(time.time(), capabilities, temp_url=temp_url)
    write_pair(options, *pairs)
    try:
        store.put(layout.store_record, seal_store_record(secret, layout, record))
    except BaseException:
        for path, _values in pairs:
            with contextlib.suppress(OSError):
                path.unlink()
        raise
