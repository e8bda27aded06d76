"""Plugins: storage, notification and transfer backends found through entry points.

Three entry-point groups (``importlib.metadata``), each with a small versioned interface:

- ``distsync.storage`` — a ``distsync.storage.api.StorageBackend`` (Local, S3, Swift, ...);
- ``distsync.notify`` — a ``distsync.storage.api.NotifyMethod`` (S3Poll);
- ``distsync.transfer`` — a ``distsync.storage.api.TransferMethod`` (BitTorrent).

The built-in backends are registered in ``python/pyproject.toml`` exactly like a third party's
(one mechanism: nothing here knows a backend by name). The engine asks a backend for its
capabilities, never for its name. ``Storage = "S3+BitTorrent"`` names a storage plus a
transfer.

A plugin that fails to import, or speaks another interface version, is one warning naming it
and its error (once per process); the others keep working. A configuration naming it gets a
one-line ConfigError.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "API_VERSIONS",
    "GROUPS",
    "Plugin",
    "PluginUnavailable",
    "describe_installed",
    "find",
    "names",
]

log = logging.getLogger(__name__)

# group kind -> entry-point group
GROUPS = {
    "storage": "distsync.storage",
    "notify": "distsync.notify",
    "transfer": "distsync.transfer",
}
# The interface version this engine speaks per group (docs/plugins.md). A plugin declares the
# one it was written for as its ``api`` attribute.
API_VERSIONS = {"storage": 1, "notify": 1, "transfer": 1}


class PluginUnavailable(Exception):
    """A plugin that is not installed, or did not load (the message says which and why)."""


@dataclass(frozen=True)
class Plugin:
    """One entry point: where it comes from, before anything is imported."""

    kind: str  # "storage", "notify" or "transfer"
    name: str
    value: str  # "module:attribute"
    distribution: str
    version: str

    def load(self) -> Any:
        """The plugin object; PluginUnavailable (and one warning) when it does not load."""
        return _load(self)


# What each plugin's load gave: its object, or why it is unavailable (warned about once).
_loaded: dict[Plugin, Any] = {}
_unavailable: dict[Plugin, str] = {}


def _load(plugin: Plugin) -> Any:
    if plugin in _loaded:
        return _loaded[plugin]
    if plugin not in _unavailable:
        try:
            obj = metadata.EntryPoint(plugin.name, plugin.value, GROUPS[plugin.kind]).load()
            api = getattr(obj, "api", None)
            if api != API_VERSIONS[plugin.kind]:
                raise PluginUnavailable(
                    f"it speaks {plugin.kind} plugin interface {api!r}, this distsync speaks "
                    f"{API_VERSIONS[plugin.kind]}"
                )
            _loaded[plugin] = obj
            return obj
        except Exception as exc:  # a plugin's import may fail in any way: it must not stop us
            _unavailable[plugin] = f"{type(exc).__name__}: {exc}"
            log.warning(
                "%s plugin %s (%s %s) is unavailable: %s",
                plugin.kind,
                plugin.name,
                plugin.distribution,
                plugin.version,
                _unavailable[plugin],
            )
    raise PluginUnavailable(
        f"{plugin.kind} plugin {plugin.name} did not load: {_unavailable[plugin]}"
    )


def _installed(kind: str) -> tuple[Plugin, ...]:
    return _scan()[kind]


@functools.cache
def _scan() -> dict[str, tuple[Plugin, ...]]:
    """Every group's entry points, in one pass over the installed distributions that reads
    only their entry_points.txt (and the metadata of the few that declare a plugin)."""
    kinds = {group: kind for kind, group in GROUPS.items()}
    found: dict[str, dict[str, Plugin]] = {kind: {} for kind in GROUPS}
    for dist in metadata.distributions():
        declared = dist.read_text("entry_points.txt")
        if not declared or "[distsync." not in declared:
            continue
        for ep in dist.entry_points:
            kind = kinds.get(ep.group)
            if kind is not None and ep.name.lower() not in found[kind]:
                dist_name = dist.metadata["Name"] or "?"
                plugin = Plugin(kind, ep.name, ep.value, dist_name, dist.version)
                found[kind][ep.name.lower()] = plugin
    for plugin in _from_source_tree():
        found[plugin.kind].setdefault(plugin.name.lower(), plugin)
    return {
        kind: tuple(sorted(plugins.values(), key=lambda p: p.name.lower()))
        for kind, plugins in found.items()
    }


def _from_source_tree() -> Iterable[Plugin]:
    """The built-ins' declarations when the engine runs from a source tree it was never
    installed from (``PYTHONPATH=python``, ansible-test's copy): the same lines of
    pyproject.toml that an install would have turned into entry points."""
    try:
        metadata.distribution("distsync")
        return ()  # installed: its entry points are the declarations
    except metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - older Pythons only
        import tomli as tomllib
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    except (OSError, KeyError, ValueError):
        return ()
    from distsync import __version__

    declared = project.get("entry-points", {})
    return [
        Plugin(kind, name, value, "distsync", __version__)
        for kind, group in GROUPS.items()
        for name, value in declared.get(group, {}).items()
    ]


def names(kind: str) -> list[str]:
    """The installed plugins of a group, by name (nothing is imported)."""
    return [plugin.name for plugin in _installed(kind)]


def find(kind: str, name: str) -> Plugin:
    """The installed plugin called ``name`` (case-insensitively); PluginUnavailable if none."""
    for plugin in _installed(kind):
        if plugin.name.lower() == name.lower():
            return plugin
    raise PluginUnavailable(f"no {kind} plugin called {name!r} is installed")


def describe_installed() -> list[str]:
    """One line per installed plugin for ``distsync --version``: each is loaded, so one
    that fails shows as unavailable (and is warned about)."""
    lines = []
    for kind in GROUPS:
        for plugin in _installed(kind):
            try:
                plugin.load()
                state = ""
            except PluginUnavailable:
                state = " (unavailable: see the warning above)"
            lines.append(
                f"  {kind:<8} {plugin.name:<14} {plugin.distribution} {plugin.version}{state}"
            )
    return lines
