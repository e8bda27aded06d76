"""One source for the unit and the configuration: the formula renders the role's templates.

Ansible renders roles/daemon/templates (tests/systemd/render.yml, the role's own test
playbook) and the formula's renderer (salt/_modules/distsync_formula.py) renders the same
files with the same variables, given as Salt settings (the role's names without the
``distsync_daemon_`` prefix): apart from the "managed by" header the results are identical,
byte for byte. The formula's defaults.yaml holds the role's defaults for every setting it
shares with the role.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Minion
from distsync.crypto.secret import generate_secret
from saltenv import REPO

ROLE = REPO / "roles" / "daemon"
FORMULA = REPO / "salt" / "distsync"
RENDER = REPO / "tests" / "systemd" / "render.yml"
PREFIX = "distsync_daemon_"
TEMPLATES = ("distsync.service.j2", "distsyncd.toml.j2")
# Settings that name a place on the Salt file server, not on an Ansible controller.
SALT_MEANING = {"source_path", "wheelhouse"}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SECRET = generate_secret()
CASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "torrent": {"torrent": True},
    "ip_allow": {"ip_address_allow": ["10.0.0.0/8", "localhost"]},
    "paths": {
        "read_write_paths": ["/srv/app"],
        "output_dir": "/data/out",
        "state_dir": "/data/state",
        "venv": "/usr/local/distsync",
        "user": "artifacts",
        "group": "artifacts",
        "watchdog_sec": "0",
        "timeout_start_sec": "5min",
    },
    "s3": {
        "storage": "S3",
        "storage_bucket": 'bucket "quoted" \\ back\tslash ünï',
        "prefix": "fleet/v3",
        "poll_interval": 7,
        "poll_jitter": 0,
        "hook_timeout": 30,
        "on_update": ["/usr/local/bin/deploy", "--name", 'it\'s "x"'],
        "pins": {"app.tar.gz": "41", 'odd name"': "7"},
        "aws_region": "eu-west-1",
        "aws_access_key": "AKIAEXAMPLE",
        "aws_secret_key": "s3cr3t/+=",
        "aws_session_token": "token",
        "aws_endpoint": "http://10.0.0.1:9000",
    },
    "local": {"storage": "Local", "storage_bucket": "/srv/bucket"},
    "releases": {
        "releases": [
            {"match": "myapp-*.tar.gz", "dir": "/srv/myapp"},
            # Ansible's bool filter on a string and on a number (the renderer has its own).
            {"match": "a-*", "dir": "/srv/a", "unpack": "no"},
            {"match": "b-*", "dir": "/srv/b", "unpack": 1},
            {
                "match": "web-*.tgz",
                "dir": "/srv/web",
                "keep": 3,
                "unpack": False,
                "pre_activate": ["./bin/migrate", "--check"],
                "health_check": ["curl", "-fsS", "http://127.0.0.1:8080/health"],
                "health_timeout": 30,
                "post_activate": ["systemctl", "reload", "web"],
            },
        ]
    },
    "metrics": {"metrics_address": "127.0.0.1:9717"},
    # salt/pillar.example as it stands (its placeholder secret replaced): a valid pillar.
    "pillar_example": {
        **yaml.safe_load((REPO / "salt" / "pillar.example").read_text())["distsync"],
        "shared_secret": SECRET,
    },
}
COMMON = {"shared_secret": SECRET, "storage_bucket": "/srv/bucket"}


def _settings(case: str) -> dict[str, Any]:
    return {**COMMON, **CASES[case]}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def by_ansible(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """Every case rendered by ansible-playbook with the role's own test playbook."""
    tmp = tmp_path_factory.mktemp("ansible")
    for case in CASES:
        (tmp / "out" / case).mkdir(parents=True)
    common = {**_yaml(ROLE / "defaults" / "main.yml"), **_yaml(ROLE / "vars" / "main.yml")}
    hosts = {case: {PREFIX + k: v for k, v in _settings(case).items()} for case in CASES}
    (tmp / "cases.json").write_text(json.dumps({"all": {"vars": common, "hosts": hosts}}))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-tmp"))
    proc = subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "ansible-playbook"),
            "-i",
            str(tmp / "cases.json"),
            str(RENDER),
            "-e",
            f"render_dir={tmp / 'out'}",
            "--forks",
            str(len(CASES)),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return {
        case: {
            "distsync.service.j2": (tmp / "out" / case / "distsync.service").read_text(),
            "distsyncd.toml.j2": (tmp / "out" / case / "distsyncd.toml").read_text(),
        }
        for case in CASES
    }


# Runs in Salt's venv: the formula module's pure renderer over every case.
RENDER_ALL = """
import importlib.util, json, sys, yaml
spec = importlib.util.spec_from_file_location("distsync_formula", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
role, cases = sys.argv[2], json.loads(sys.stdin.read())
read = lambda path: open(f"{role}/{path}").read()
defaults, fixed = yaml.safe_load(read("defaults/main.yml")), yaml.safe_load(read("vars/main.yml"))
print(json.dumps({
    case: {t: module.render_role_template(read(f"templates/{t}"), defaults, fixed, settings)
           for t in ("distsync.service.j2", "distsyncd.toml.j2")}
    for case, settings in cases.items()}))
"""


@pytest.fixture(scope="module")
def by_formula(salt_bin: Path) -> dict[str, dict[str, str]]:
    proc = subprocess.run(
        [
            str(salt_bin / "python"),
            "-c",
            RENDER_ALL,
            str(REPO / "salt" / "_modules" / "distsync_formula.py"),
            str(FORMULA / "files" / "role"),
        ],
        input=json.dumps({case: _settings(case) for case in CASES}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rendered: dict[str, dict[str, str]] = json.loads(proc.stdout)
    return rendered


def _body(text: str) -> str:
    """The file without its leading "managed by" comment block."""
    lines = text.split("\n")
    assert lines[0] == "#" and lines[2] == "#", lines[:3]
    return "\n".join(lines[3:])


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("template", TEMPLATES)
def test_formula_renders_what_the_role_renders(
    by_ansible: dict[str, dict[str, str]],
    by_formula: dict[str, dict[str, str]],
    case: str,
    template: str,
) -> None:
    ansible, salt = by_ansible[case][template], by_formula[case][template]
    assert ansible.startswith("#\n# Ansible managed\n#\n")
    assert salt.startswith("#\n# Managed by Salt (the distsync formula);")
    assert _body(salt) == _body(ansible)


def test_cases_reach_what_they_change(by_formula: dict[str, dict[str, str]]) -> None:
    """The comparison is not between two renderings that ignore the settings."""
    unit = {case: by_formula[case]["distsync.service.j2"] for case in CASES}
    assert "AF_NETLINK" in unit["torrent"] and "AF_NETLINK" not in unit["defaults"]
    assert "IPAddressAllow=10.0.0.0/8 localhost" in unit["ip_allow"]
    assert "ReadWritePaths=/data/out /data/state /srv/app" in unit["paths"]
    assert (
        "ExecStart=/usr/local/distsync/bin/distsync daemon -c /etc/distsync/distsyncd.toml"
        in unit["paths"]
    )
    assert "User=artifacts" in unit["paths"] and "WatchdogSec=0" in unit["paths"]
    assert (
        "ReadWritePaths=/srv/distsync /var/lib/distsync /srv/myapp /srv/a /srv/b /srv/web"
        in (unit["releases"])
    )
    assert 'HealthCheck = ["curl", "-fsS"' in by_formula["releases"]["distsyncd.toml.j2"]
    config = by_formula["s3"]["distsyncd.toml.j2"]
    assert 'SecretKey = "s3cr3t/+="' in config and '"odd name\\"" = "7"' in config
    assert 'MetricsAddress = "127.0.0.1:9717"' in by_formula["metrics"]["distsyncd.toml.j2"]
    assert "MetricsAddress" not in by_formula["defaults"]["distsyncd.toml.j2"]
    example = by_formula["pillar_example"]
    assert 'OnUpdate = ["/usr/local/bin/deploy-app"]' in example["distsyncd.toml.j2"]
    assert "WatchdogSec=60s" in example["distsync.service.j2"]


def test_formula_defaults_are_the_roles(tmp_path: Path) -> None:
    role = {k.removeprefix(PREFIX): v for k, v in _yaml(ROLE / "defaults" / "main.yml").items()}
    formula = _yaml(FORMULA / "defaults.yaml")["distsync"]
    assert set(formula) <= set(role), set(formula) - set(role)
    for key, value in formula.items():
        if key not in SALT_MEANING:
            assert value == role[key], key


def test_render_through_salt_matches_the_pure_renderer(
    minion: Minion, by_formula: dict[str, dict[str, str]]
) -> None:
    """The real path: the loader, the file server and the files/role link."""
    for template in TEMPLATES:
        rendered = minion.call(
            "distsync_formula.render", template, json.dumps(_settings("defaults"))
        )
        assert rendered == by_formula["defaults"][template]
    assert (
        minion.call("distsync_formula.role_value", "config_file") == "/etc/distsync/distsyncd.toml"
    )
    pip_args = minion.call(
        "distsync_formula.role_value", "pip_args", json.dumps({"wheelhouse": "salt://w"})
    )
    assert pip_args == ["--no-index", "--find-links", "/opt/distsync/payload/wheels"]
    requirement = minion.call(
        "distsync_formula.role_value", "requirement", json.dumps({"torrent": True})
    )
    assert requirement == "/opt/distsync/payload/source[torrent]"


def test_formula_stops_before_changing_a_host_without_systemd(minion: Minion) -> None:
    config = yaml.safe_load(minion.conf.joinpath("minion").read_text())
    config["grains"] = {"init": "openrc"}  # whatever this machine's PID 1 is
    minion.conf.joinpath("minion").write_text(yaml.safe_dump(config))
    proc = minion.run("state.apply", "distsync", "test=True")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "distsync formula: the unit needs systemd, but this minion's init is openrc" in output
