"""The plugin registry (distsync.plugins) and the configuration that names plugins.

Plugins here are real distributions as importlib.metadata sees them: a ``*.dist-info``
directory with an ``entry_points.txt`` on sys.path, as pip leaves one.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from distsync import plugins
from distsync.config import load_config
from distsync.crypto.secret import generate_secret
from distsync.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    """Each test scans sys.path anew (the registry caches per process)."""

    def forget() -> None:
        plugins._scan.cache_clear()
        plugins._loaded.clear()
        plugins._unavailable.clear()

    forget()
    yield
    forget()


def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dist: str, entry_points: str,
            modules: dict[str, str] | None = None) -> None:  # fmt: skip
    site = tmp_path / f"site-{dist}"
    info = site / f"{dist.replace('-', '_')}-1.2.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2\n")
    (info / "entry_points.txt").write_text(entry_points)
    for name, source in (modules or {}).items():
        (site / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(site))


def config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(f'SharedSecret = "{generate_secret()}"\nStorageBucket = "b"\n{body}')
    path.chmod(0o600)
    return path


def test_the_built_ins_are_the_entry_points_pyproject_declares() -> None:
    declared = tomllib.loads((REPO / "python" / "pyproject.toml").read_text())["project"][
        "entry-points"
    ]
    for kind, group in plugins.GROUPS.items():
        found = {p.name: p for p in plugins._installed(kind)}
        assert set(declared[group]) <= set(found)
        for name, value in declared[group].items():
            assert found[name].value == value and found[name].distribution == "distsync"
            assert found[name].load().api == plugins.API_VERSIONS[kind]


def test_a_source_tree_never_installed_still_finds_the_built_ins() -> None:
    # -S: no site-packages, so no installed distsync: the declarations come from pyproject.
    code = "from distsync import plugins as p; print(p.names('storage'), p.names('transfer'))"
    done = subprocess.run(
        [sys.executable, "-S", "-c", code],
        cwd=REPO / "python", capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert done.stdout.split("\n")[0] == "['Local', 'S3', 'Swift'] ['BitTorrent']"


def test_a_plugin_that_fails_to_import_is_one_warning_and_the_rest_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    install(tmp_path, monkeypatch, "distsync-broken",
            "[distsync.storage]\nBroken = broken_store:BACKEND\n",
            {"broken_store": "raise RuntimeError('needs a library that is missing')"})  # fmt: skip
    caplog.set_level(logging.WARNING, logger="distsync.plugins")
    lines = plugins.describe_installed()
    with pytest.raises(plugins.PluginUnavailable, match="missing"):
        plugins.find("storage", "broken").load()
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert re.search(r"storage plugin Broken \(distsync-broken 1\.2\) is unavailable: "
                     r"RuntimeError: needs a library that is missing", warnings[0])  # fmt: skip
    assert any("Broken" in line and "unavailable" in line for line in lines)
    assert any(line.split()[:2] == ["storage", "Local"] for line in lines)
    cfg = load_config(config(tmp_path, 'Storage = "Local"\n'))  # the others keep working
    assert cfg.storage == "Local"
    with pytest.raises(ConfigError, match=r"Storage: storage plugin Broken did not load"):
        load_config(config(tmp_path, 'Storage = "Broken"\n'))


def test_a_plugin_for_another_interface_version_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(tmp_path, monkeypatch, "distsync-future",
            "[distsync.storage]\nFuture = future_store:BACKEND\n",
            {"future_store": "class B:\n    api = 2\nBACKEND = B()\n"})  # fmt: skip
    with pytest.raises(plugins.PluginUnavailable, match="speaks storage plugin interface 2"):
        plugins.find("storage", "Future").load()


def test_storage_names_a_storage_and_optionally_a_transfer(tmp_path: Path) -> None:
    cfg = load_config(config(tmp_path, 'Storage = "s3+bittorrent"\n'))
    assert (cfg.storage, cfg.storage_name, cfg.transfer_name) == ("S3+BitTorrent", "S3",
                                                                   "BitTorrent")  # fmt: skip
    cfg = load_config(config(tmp_path, 'Storage = "local"\n'))
    assert (cfg.storage, cfg.transfer_name) == ("Local", None)
    with pytest.raises(ConfigError, match=r"Storage: unknown value 'Tape' \(expected one of: "
                       r"Local, S3, Swift.*BitTorrent\)"):  # fmt: skip
        load_config(config(tmp_path, 'Storage = "Tape"\n'))
    with pytest.raises(ConfigError, match=r"Storage: unknown value 'S3\+Pigeons'"):
        load_config(config(tmp_path, 'Storage = "S3+Pigeons"\n'))


def test_a_transfer_needing_what_the_storage_cannot_do_is_a_config_error(
    tmp_path: Path,
) -> None:
    # The swarm's web seed is a presigned URL; a directory hands out none.
    with pytest.raises(ConfigError, match=r"Storage: BitTorrent needs a storage that can do "
                       r"presigned_urls; Local cannot"):  # fmt: skip
        load_config(config(tmp_path, 'Storage = "Local+BitTorrent"\n'))


def test_plugin_tables_are_checked_by_their_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(tmp_path, monkeypatch, "distsync-tape", "[distsync.storage]\nTape = tape:BACKEND\n",
            {"tape": (
                "from distsync.plugin_config import check_table\n"
                "from distsync.storage.local import BACKEND as LOCAL\n"
                "class Tape:\n"
                "    api = 1\n"
                "    capabilities = LOCAL.capabilities\n"
                "    state_key = 'Tape'\n"
                "    def check_config(self, cfg, table):\n"
                "        check_table(cfg, 'Tape', table, {'Drive': (str,), 'Speed': (int,)},\n"
                "                    required=('Drive',))\n"
                "BACKEND = Tape()\n")})  # fmt: skip
    cfg = load_config(config(tmp_path, 'Storage = "tape"\n[Plugin.Tape]\nDrive = "/dev/st0"\n'))
    assert cfg.storage == "Tape" and cfg.plugin_table("Tape") == {"Drive": "/dev/st0"}
    for body, message in (
        ('Storage = "Tape"\n', "Plugin.Tape.Drive: is missing"),
        ('Storage = "Tape"\n[Plugin.Tape]\nDrive = "x"\nSped = 1\n',
         "Plugin.Tape.Sped: unknown key (did you mean Speed?)"),
        ('Storage = "Tape"\n[Plugin.Tape]\nDrive = "x"\nSpeed = true\n',
         "Plugin.Tape.Speed: must be of type int"),
        # A table for an installed plugin that is not in use is still checked by it.
        ('Storage = "Local"\n[Plugin.Tape]\nSpeed = 1\n', "Plugin.Tape.Drive: is missing"),
        ('Storage = "Local"\n[Plugin.Nope]\nX = 1\n',
         "Plugin.Nope: no plugin of that name is installed"),
        ('Storage = "Local"\n[Plugin.Local]\nX = 1\n', "Plugin.Local: Local takes no settings"),
        ('Storage = "Local"\nPlugin = 3\n', "Plugin: must be a table"),
    ):  # fmt: skip
        path = config(tmp_path, body)
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert str(caught.value) == f"{path}: {message}" or message in str(caught.value)
        assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_the_engine_asks_capabilities_never_storage_names() -> None:
    """Issue 22's "done when": no backend is chosen by comparing Storage's value."""
    hits = [
        f"{path.relative_to(REPO)}:{n}"
        for path in (REPO / "python" / "distsync").rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"cfg\.storage\s*[!=]=", line)
    ]
    assert hits == []
