"""roles/daemon/files/wheelhouse.py: which host Pythons a wheelhouse serves, and its pins.

The decisions are fed with small but real wheel files (zip archives with a METADATA, named
like the wheels `make wheelhouse` fetches) and host descriptions printed by the role's own
probe; `check` runs as the role runs it, a process on the controller. `make wheelhouse` itself
(pip against the index, for 3.11 and 3.13) runs in tests/systemd, whose fleet installs from it.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "roles" / "daemon" / "files" / "wheelhouse.py"
ROLE_VARS = REPO / "roles" / "daemon" / "vars" / "main.yml"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wheelhouse", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["wheelhouse"] = module
    spec.loader.exec_module(module)
    return module


wh = _load()


def host(python: str = "3.13", glibc: str | None = "2.41", machine: str = "x86_64") -> str:
    major, minor = python.split(".")
    libc = ["glibc", glibc] if glibc else ["", ""]
    return json.dumps({"implementation": "cpython", "python": [int(major), int(minor)],
                       "abiflags": "", "libc": libc, "machine": machine})


def wheel(directory: Path, filename: str, *requires: str) -> Path:
    """A wheel file with just enough inside: METADATA naming its requirements."""
    name, version = filename.split("-")[:2]
    path = directory / filename
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {line}\n" for line in requires)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name}-{version}.dist-info/METADATA", metadata)
        archive.writestr(f"{name}-{version}.dist-info/WHEEL", "Wheel-Version: 1.0\n")
    return path


@pytest.fixture
def house(tmp_path: Path) -> Path:
    """What `make wheelhouse PYTHONS="3.11 3.13" TORRENT=1` holds, in miniature."""
    d = tmp_path / "wheelhouse"
    d.mkdir()
    wheel(d, "distsync-0.1.0-py3-none-any.whl", "cryptography>=50", "boto3>=1.34",
          "prometheus-client>=0.20", "python-swiftclient>=4.4", "tomli-w>=1.0",
          "tomli>=2.0; python_version < '3.11'", "libtorrent>=2.0.9; extra == 'torrent'")
    wheel(d, "cryptography-50.0.2-cp311-abi3-manylinux_2_34_x86_64.whl",
          "cffi>=2.0.0; platform_python_implementation != 'PyPy'",
          "bcrypt>=3.1.5; extra == 'ssh'")
    for version in ("311", "313"):
        wheel(d, f"cffi-2.1.1-cp{version}-cp{version}-manylinux2014_x86_64."
                 "manylinux_2_17_x86_64.whl", "pycparser")
        wheel(d, f"libtorrent-2.1.1-cp{version}-cp{version}-manylinux_2_17_x86_64."
                 "manylinux2014_x86_64.whl")
    wheel(d, "pycparser-3.12-py3-none-any.whl")
    wheel(d, "boto3-1.43.11-py3-none-any.whl", "botocore<1.44.0,>=1.43.11")
    wheel(d, "botocore-1.43.106-py3-none-any.whl")
    wheel(d, "tomli_w-1.2.0-py3-none-any.whl")
    wheel(d, "prometheus_client-0.26.0-py3-none-any.whl")
    wheel(d, "python_swiftclient-4.11.0-py3-none-any.whl", "requests>=2.4.0")
    wheel(d, "requests-2.34.2-py3-none-any.whl", "charset_normalizer<4,>=2", "idna<4,>=2.5",
          "urllib3<3,>=1.26", "certifi>=2023.5.7")
    for name in ("charset_normalizer-3.5.2", "idna-3.20", "urllib3-2.8.0", "certifi-2026.10.18"):
        wheel(d, f"{name}-py3-none-any.whl")
    wheel(d, "setuptools-80.9.0-py3-none-any.whl")
    return d


def check(house: Path, probe: str, *what: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, SCRIPT, "check", house, "--host", probe, "--interpreter",
         "/usr/bin/python3", *what],
        capture_output=True, text=True, timeout=60, check=False,
    )


@pytest.mark.parametrize("python", ["3.11", "3.13"])
def test_a_wheelhouse_for_both_versions_serves_both(house: Path, python: str) -> None:
    for what in (["--require", "distsync[torrent]==0.1.0"],
                 ["--source", str(REPO / "python"), "--extra", "torrent"]):
        done = check(house, host(python), *what)
        assert done.returncode == 0, done.stderr


def test_a_missing_per_version_wheel_names_the_wheel_and_the_python(house: Path) -> None:
    for cp313 in house.glob("cffi-*cp313*.whl"):
        cp313.unlink()
    done = check(house, host("3.13"), "--require", "distsync")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    line = done.stderr
    assert "no wheel of cffi>=2.0.0 (needed by cryptography 50.0.2)" in line
    assert "CPython 3.13 (/usr/bin/python3) on glibc 2.41, x86_64" in line
    assert 'make wheelhouse PYTHONS="... 3.13"' in line
    # 3.11 is still served; a 3.13 host without the torrent extra still needs cffi.
    assert check(house, host("3.11"), "--require", "distsync").returncode == 0


def test_an_extra_pulls_its_wheels_only_when_asked(house: Path) -> None:
    for torrent in house.glob("libtorrent-*cp313*.whl"):
        torrent.unlink()
    assert check(house, host("3.13"), "--require", "distsync").returncode == 0
    done = check(house, host("3.13"), "--require", "distsync[torrent]")
    assert done.returncode == 1 and "no wheel of libtorrent>=2.0.9" in done.stderr
    done = check(house, host("3.13"), "--source", str(REPO / "python"), "--extra", "torrent")
    assert done.returncode == 1 and "no wheel of libtorrent>=2.0.9" in done.stderr


def test_an_older_glibc_than_the_wheels_need_is_told_as_such(house: Path) -> None:
    done = check(house, host("3.11", glibc="2.31"), "--require", "distsync")
    assert done.returncode == 1
    assert "no wheel of cryptography>=50" in done.stderr
    assert "make wheelhouse GLIBC=2.31" in done.stderr


def test_other_machines_and_libcs_are_not_served(house: Path) -> None:
    assert check(house, host(machine="aarch64"), "--require", "distsync").returncode == 1
    done = check(house, host(glibc=None), "--require", "distsync")
    assert done.returncode == 1 and "no glibc" in done.stderr


def test_a_package_absent_altogether(house: Path) -> None:
    (house / "tomli_w-1.2.0-py3-none-any.whl").unlink()
    done = check(house, host(), "--require", "distsync")
    assert done.returncode == 1
    assert "no wheel of tomli-w>=1.0 (needed by distsync 0.1.0)" in done.stderr
    assert "make wheelhouse (TORRENT=1 adds libtorrent)" in done.stderr


def test_markers_follow_the_host(house: Path) -> None:
    # tomli is needed below 3.11 only: a 3.10 host, given wheels for everything else, is
    # refused for tomli alone (the 3.11 and 3.13 hosts above never asked for it).
    wheel(house, "cryptography-50.0.2-cp37-abi3-manylinux_2_17_x86_64.whl", "cffi>=2.0.0")
    wheel(house, "cffi-2.1.1-cp310-cp310-manylinux_2_17_x86_64.whl", "pycparser")
    done = check(house, host("3.10"), "--require", "distsync")
    assert done.returncode == 1 and "no wheel of tomli>=2.0" in done.stderr


def test_the_version_asked_for_must_be_there(house: Path) -> None:
    done = check(house, host(), "--require", "distsync==0.2.0")
    assert done.returncode == 1
    assert "no wheel of distsync==0.2.0" in done.stderr
    assert "distsync-0.1.0-py3-none-any.whl" in done.stderr


def test_the_source_needs_its_build_backend(house: Path) -> None:
    (house / "setuptools-80.9.0-py3-none-any.whl").unlink()
    done = check(house, host(), "--source", str(REPO / "python"))
    assert done.returncode == 1 and "no wheel of setuptools>=64" in done.stderr
    # An install of the engine's own wheel builds nothing.
    assert check(house, host(), "--require", "distsync").returncode == 0


def test_bad_input_is_one_line(house: Path, tmp_path: Path) -> None:
    for args in (
        [house, "--host", "not json", "--require", "distsync"],
        [tmp_path / "nowhere", "--host", host(), "--require", "distsync"],
        [house, "--host", host(), "--require", "distsync[[["],
    ):
        done = subprocess.run([sys.executable, SCRIPT, "check", *map(str, args)],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode in (1, 2) and done.stderr.count("\n") <= 2, done.stderr
        assert "Traceback" not in done.stderr


def test_the_roles_probe_describes_this_interpreter() -> None:
    """What the role runs on a host, run here: check reads it as this very Python."""
    probe = yaml.safe_load(ROLE_VARS.read_text())["_distsync_daemon_python_probe"]
    printed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                             timeout=60, check=True).stdout
    target = wh.Target.from_probe(printed)
    assert target.python == sys.version_info[:2]
    assert target.implementation == sys.implementation.name
    # The running interpreter accepts the tags its own pip would: packaging's view of it.
    from packaging import tags

    assert next(iter(tags.sys_tags())) in set(target.tags())


# -- building: only pinned versions ----------------------------------------------------------


def test_pins_are_read_from_a_freeze_file(tmp_path: Path) -> None:
    pins = tmp_path / "test.txt"
    pins.write_text("# generated\ncryptography==50.0.2\nPyYAML==6.0.3\ntomli_w==1.2.0\n"
                    "-c other.txt\nsomething>=1\n")
    assert wh.read_pins(pins) == {"cryptography": "50.0.2", "pyyaml": "6.0.3",
                                  "tomli-w": "1.2.0"}


def test_a_wheel_the_pins_do_not_name_is_reported(house: Path) -> None:
    wheels = wh.read_wheelhouse(house)
    pins = {"cryptography": "50.0.2", "cffi": "2.1.1", "libtorrent": "2.1.1", "pycparser": "3.12",
            "boto3": "1.43.11", "botocore": "1.43.106", "tomli-w": "1.2.0",
            "setuptools": "80.9.0", "python-swiftclient": "4.11.0", "requests": "2.34.2",
            "charset-normalizer": "3.5.2", "idna": "3.20", "urllib3": "2.8.0",
            "certifi": "2026.10.18", "prometheus-client": "0.26.0"}
    assert wh.unpinned(wheels, pins) == []
    pins["botocore"] = "1.43.105"
    del pins["pycparser"]
    assert wh.unpinned(wheels, pins) == ["botocore-1.43.106-py3-none-any.whl",
                                        "pycparser-3.12-py3-none-any.whl"]


def test_this_checkouts_pins_cover_the_engines_dependencies() -> None:
    """make wheelhouse uses requirements/test.txt: it must pin what the engine needs."""
    pins = wh.read_pins(REPO / "requirements" / "test.txt")
    for name in ("cryptography", "cffi", "pycparser", "boto3", "botocore", "s3transfer",
                 "jmespath", "python-dateutil", "six", "urllib3", "tomli-w", "libtorrent",
                 "python-swiftclient", "requests", "charset-normalizer", "idna", "certifi",
                 "prometheus-client", "setuptools"):
        assert name in pins, name
