"""Setup as a desired state: what the Ansible module and the Salt module and state call.

``run_setup`` always acts; configuration management asks first whether anything would
change, acts only then, reports ``changed`` truthfully and can stop before acting (check
mode, ``test=True``). Both faces call these two functions, so they cannot disagree.
Nothing returned here carries a secret.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from distsync.fsutil import local_io_error
from distsync.provision.options import DestroyOptions, Say, SetupOptions, silent

__all__ = ["RemoveReport", "SetupReport", "ensure_absent", "ensure_setup"]


@dataclass(frozen=True)
class SetupReport:
    """What ``ensure_setup`` did, or with ``dry_run`` would do."""

    changed: bool
    storage: str
    bucket: str | None
    setup_id: str | None
    upload_config: str
    daemon_config: str
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RemoveReport:
    """What ``ensure_absent`` removed (configs by path, cloud resources by name)."""

    changed: bool
    removed: list[str]


def ensure_setup(
    options: SetupOptions, *, dry_run: bool = False, warn: Say = silent
) -> SetupReport:
    """Set up unless ``setup_in_place(options)``; ``force`` always sets up anew (new secret)."""
    from distsync.provision import run_setup, setup_in_place

    unchanged = SetupReport(
        changed=False,
        storage=(options.storage or "local").lower(),
        bucket=options.bucket,
        setup_id=options.setup_id,
        upload_config=options.upload_config,
        daemon_config=options.daemon_config,
    )
    if not options.force and setup_in_place(options):
        return unchanged
    if dry_run:
        return replace(unchanged, changed=True)
    outcome = run_setup(options, warn=warn)
    return replace(
        unchanged,
        changed=outcome.changed or outcome.configs_written,
        bucket=outcome.bucket,
        setup_id=outcome.setup_id,
        notes=list(outcome.notes),
    )


def ensure_absent(
    configs: Sequence[str], *, destroy: DestroyOptions | None = None, dry_run: bool = False
) -> RemoveReport:
    """Remove the config files that exist and, with ``destroy``, an S3 setup's resources.

    A dry run cannot know without the cloud calls what an S3 teardown would find, so it
    reports a change whenever one is asked for.
    """
    from distsync.provision import run_destroy

    present = [path for path in configs if os.path.lexists(os.path.expanduser(path))]
    removed: list[str] = []
    if destroy is not None and not dry_run:
        removed.extend(run_destroy(destroy).removed)
    if not dry_run:
        for path in present:
            try:
                os.unlink(os.path.expanduser(path))
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise local_io_error("remove", path, exc) from None
    removed.extend(present)
    return RemoveReport(changed=bool(removed) or (dry_run and destroy is not None), removed=removed)
