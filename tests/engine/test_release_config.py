"""[[Release]] tables: defaults, and one-line errors naming file, table and key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from distsync.config import load_config
from distsync.errors import ConfigError

HEAD = 'SharedSecret = "{secret}"\nStorageBucket = "b"\n'


def test_release_defaults_and_values(write_config: Callable[..., Path], tmp_path: Path) -> None:
    cfg = load_config(
        write_config(
            HEAD
            + '[[Release]]\nMatch = "app-*.tar.gz"\nDir = "srv/app"\n'
            + '[[Release]]\nMatch = "img.tar"\nDir = "/srv/img"\nKeep = 2\nUnpack = false\n'
            + 'PreActivate = "./bin/migrate --check"\nHealthCheck = ["curl", "-fsS", "x"]\n'
            + 'HealthTimeout = 5.5\nPostActivate = ["systemctl", "reload", "app"]\n'
        )
    )
    app, img = cfg.releases
    assert app.dir == tmp_path / "srv" / "app"  # relative to the config file
    assert (app.keep, app.unpack, app.health_timeout) == (5, True, 60.0)
    assert app.pre_activate == app.health_check == app.post_activate == ()
    assert app.claims("app-1.2.tar.gz") and not app.claims("app.tar.gz")
    assert (img.keep, img.unpack, img.health_timeout) == (2, False, 5.5)
    assert img.pre_activate == ("./bin/migrate", "--check")
    assert img.health_check == ("curl", "-fsS", "x")
    assert img.post_activate == ("systemctl", "reload", "app")


@pytest.mark.parametrize(
    "table,key,words",
    [
        ('Dir = "/srv/a"\n', "Release[1].Match", "is required"),
        ('Match = "a"\n', "Release[1].Dir", "is required"),
        ('Match = "a"\nDir = "/a"\nKeep = 0\n', "Release[1].Keep", "from 1 to 1000"),
        ('Match = "a"\nDir = "/a"\nKeep = "2"\n', "Release[1].Keep", "must be an integer"),
        ('Match = "a"\nDir = "/a"\nUnpack = 1\n', "Release[1].Unpack", "true or false"),
        ('Match = "a"\nDir = "/a"\nHealthTimeout = 0\n', "Release[1].HealthTimeout", "between"),
        ('Match = "a"\nDir = "/a"\nHealthCheck = []\n', "Release[1].HealthCheck", "is empty"),
        ('Match = "a"\nDir = "/a"\nPostActivate = [1]\n', "Release[1].PostActivate", "strings"),
        ('Match = "a"\nDir = "/a"\nPreActivate = "x \'y"\n', "Release[1].PreActivate", "split"),
        ('Match = "a"\nDir = "/a"\nHealtCheck = "x"\n', "Release[1].HealtCheck", "unknown key"),
        ('Match = "../a"\nDir = "/a"\n', "Release[1].Match", "no '/'"),
        ('Match = "a"\nDir = "/"\n', "Release[1].Dir", "root directory"),
    ],
)
def test_release_errors_name_file_table_and_key(
    write_config: Callable[..., Path], table: str, key: str, words: str
) -> None:
    path = write_config(HEAD + '[[Release]]\nMatch = "ok"\nDir = "/ok"\n[[Release]]\n' + table)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {key.replace('[1]', '[2]')}: "), message
    assert words in message and "\n" not in message


def test_overlapping_release_dirs_are_refused(write_config: Callable[..., Path]) -> None:
    path = write_config(
        HEAD
        + '[[Release]]\nMatch = "a"\nDir = "/srv/a"\n'
        + '[[Release]]\nMatch = "b"\nDir = "/srv/a/b"\n'
    )
    with pytest.raises(ConfigError, match=r"Release\[2\]\.Dir: overlaps the Dir of Release\[1\]"):
        load_config(path)


def test_release_must_be_tables(write_config: Callable[..., Path]) -> None:
    with pytest.raises(ConfigError, match=r"Release: must be a list"):
        load_config(write_config(HEAD + 'Release = "x"\n'))
    with pytest.raises(ConfigError, match=r"Release\[1\]: must be a table"):
        load_config(write_config(HEAD + 'Release = ["x"]\n'))
