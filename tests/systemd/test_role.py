"""Static checks of the daemon role: no containers, no root, a few seconds.

- meta/argument_specs.yml matches defaults/main.yml key for key and default for default;
  the role's variables carry its prefixes; the role README documents each variable.
- Every task that can see a secret hides its output (no_log).
- The unit template, rendered by Ansible, passes `systemd-analyze verify` with no message and
  scores at most 2.0 with `systemd-analyze security --offline=true`.
- The config template, rendered with awkward values, loads with the engine's own loader and
  means what the variables said.
- The payload packer is reproducible and ships no caches.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from distsync.config import Config, load_config
from distsync.crypto.secret import generate_secret
from harness import REPO, sh

ROLE = REPO / "roles" / "daemon"
RENDER = Path(__file__).resolve().parent / "render.yml"
EXPOSURE_LIMIT = 2.0
SECRET_WORDS = ("shared_secret", "secret_key", "session_token", "config_src", "distsyncd.toml")


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def test_argument_specs_match_defaults_key_for_key() -> None:
    defaults = _yaml(ROLE / "defaults" / "main.yml")
    options = _yaml(ROLE / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert list(options) == list(defaults), "same keys, same order"
    for key, value in defaults.items():
        assert "default" in options[key], key
        assert options[key]["default"] == value, key
        assert options[key].get("description"), key


def test_variables_carry_the_role_prefix() -> None:
    assert all(k.startswith("distsync_daemon_") for k in _yaml(ROLE / "defaults" / "main.yml"))
    assert all(k.startswith("_distsync_daemon_") for k in _yaml(ROLE / "vars" / "main.yml"))
    for path in sorted((ROLE / "tasks").glob("*.yml")):
        for name in re.findall(r"register: (\S+)", path.read_text()):
            assert name.startswith("_distsync_daemon_"), f"{path.name}: {name}"


def test_role_readme_documents_every_variable() -> None:
    readme = (ROLE / "README.md").read_text()
    missing = [k for k in _yaml(ROLE / "defaults" / "main.yml") if f"`{k}`" not in readme]
    assert not missing


def _tasks(data: Any) -> list[dict[str, Any]]:
    found = []
    for task in data or []:
        found.append(task)
        for key in ("block", "rescue", "always"):
            found.extend(_tasks(task.get(key)))
    return found


def test_tasks_that_see_secrets_hide_their_output() -> None:
    for path in sorted((ROLE / "tasks").glob("*.yml")):
        for task in _tasks(_yaml(path)):
            if "block" in task:
                continue
            text = json.dumps(task)
            if not any(word in text for word in SECRET_WORDS):
                continue
            if "ansible.builtin.assert" in task:
                # An assert reports its expression, never a value; its message must not
                # interpolate a secret either.
                assert "secret" not in str(task.get("fail_msg", "")).replace(
                    "distsync_daemon_shared_secret and", ""
                ), task["name"]
                continue
            if "ansible.builtin.stat" in task:
                continue
            assert task.get("no_log") is True, f"{path.name}: {task['name']}"


# -- rendering the templates ------------------------------------------------------------------

SECRET = generate_secret()
AWKWARD = 'bucket "quoted" \\ back\tslash ünï'
CASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "torrent": {"distsync_daemon_torrent": True},
    "ip_allow": {"distsync_daemon_ip_address_allow": ["10.0.0.0/8", "localhost"]},
    "hook_paths": {
        "distsync_daemon_read_write_paths": ["/srv/app"],
        "distsync_daemon_output_dir": "/data/out",
        "distsync_daemon_watchdog_sec": "0",
    },
    "s3": {
        "distsync_daemon_storage": "S3",
        "distsync_daemon_storage_bucket": AWKWARD,
        "distsync_daemon_prefix": "fleet/v3",
        "distsync_daemon_poll_interval": 7,
        "distsync_daemon_poll_jitter": 0,
        "distsync_daemon_hook_timeout": 30,
        "distsync_daemon_on_update": ["/usr/local/bin/deploy", "--name", 'it\'s "x"'],
        "distsync_daemon_pins": {"app.tar.gz": "41", 'odd name"': "7"},
        "distsync_daemon_metrics_address": "127.0.0.1:9717",
        "distsync_daemon_groups": ["web", 'eu "west"'],
        "distsync_daemon_names": ["myapp-*.tar.gz", "nginx.conf"],
        "distsync_daemon_aws_region": "eu-west-1",
        "distsync_daemon_aws_access_key": "AKIAEXAMPLE",
        "distsync_daemon_aws_secret_key": "s3cr3t/+=",
        "distsync_daemon_aws_endpoint": "http://10.0.0.1:9000",
    },
    "releases": {
        "distsync_daemon_pins": {"app-3.tar.gz": "3"},
        "distsync_daemon_releases": [
            {
                "match": "app-*.tar.gz",
                "dir": "/srv/app",
                "keep": 2,
                "health_check": ["/usr/bin/curl", "-fsS", 'http://127.0.0.1:8080/"h"'],
                "health_timeout": 30,
                "post_activate": ["/bin/systemctl", "reload", "app"],
            },
            {"match": "image.tar", "dir": "/srv/image", "unpack": False, "pre_activate": None},
        ],
    },
    "swift": {
        "distsync_daemon_storage": "Swift",
        "distsync_daemon_storage_bucket": "distsync-prod",
        "distsync_daemon_swift_auth_url": "https://swift.example/auth/v1.0",
        "distsync_daemon_swift_username": "acct:fleet",
        "distsync_daemon_swift_api_key": 'k"ey\\1',
        "distsync_daemon_venv": str(REPO / ".venv"),
    },
    "swarm": {
        "distsync_daemon_torrent": True,
        "distsync_daemon_storage": "S3+BitTorrent",
        "distsync_daemon_torrent_port": 7000,
        "distsync_daemon_torrent_address": "10.1.2.3",
        "distsync_daemon_torrent_seed_seconds": 120,
        "distsync_daemon_torrent_s3_readers": 4,
        "distsync_daemon_torrent_web_seed_delay": 45,
        "distsync_daemon_torrent_stall_seconds": 90,
        "distsync_daemon_tracker_url": "http://tracker.example:6969/announce",
    },
    "local": {
        "distsync_daemon_storage": "Local",
        "distsync_daemon_storage_bucket": "/srv/bucket",
        "distsync_daemon_venv": str(REPO / ".venv"),
    },
}


@pytest.fixture(scope="module")
def fake_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv whose bin/distsync exists, so `systemd-analyze verify` can check ExecStart."""
    venv = tmp_path_factory.mktemp("venv")
    tool = venv / "bin" / "distsync"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\nexit 0\n")
    tool.chmod(0o755)
    return venv


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory, fake_venv: Path) -> dict[str, Path]:
    """Every case rendered by Ansible itself, in one run: case name -> directory."""
    tmp = tmp_path_factory.mktemp("render")
    for name in CASES:
        (tmp / "out" / name).mkdir(parents=True)
    common = {
        **_yaml(ROLE / "defaults" / "main.yml"),
        **_yaml(ROLE / "vars" / "main.yml"),
        "distsync_daemon_venv": str(fake_venv),
        "distsync_daemon_shared_secret": SECRET,
        "distsync_daemon_storage_bucket": "/srv/bucket",
    }
    inventory = {"all": {"vars": common, "hosts": CASES}}
    (tmp / "cases.json").write_text(json.dumps(inventory))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-tmp"))
    sh(
        [
            REPO / ".venv" / "bin" / "ansible-playbook",
            "-i",
            tmp / "cases.json",
            RENDER,
            "-e",
            f"render_dir={tmp / 'out'}",
            "--forks",
            str(len(CASES)),
        ],
        env=env,
        timeout=300,
    )
    return {name: tmp / "out" / name for name in CASES}


needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="needs systemd-analyze (package systemd)"
)


def _exposure(unit: Path) -> float:
    proc = sh(["systemd-analyze", "security", "--no-pager", "--offline=true", unit], check=False)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    return float(match.group(1))


@needs_analyze
@pytest.mark.parametrize("case", ["defaults", "torrent", "ip_allow", "hook_paths"])
def test_unit_verifies_and_is_hardened(
    rendered: dict[str, Path], fake_venv: Path, case: str
) -> None:
    unit = rendered[case] / "distsync.service"
    text = unit.read_text()
    assert text.startswith("#\n# Ansible managed")
    for line in ("Type=notify", "Restart=on-failure", "UMask=0027", "ProtectSystem=strict"):
        assert line in text.splitlines()
    assert f"ExecStart={fake_venv}/bin/distsync daemon -c /etc/distsync/distsyncd.toml" in text
    proc = sh(["systemd-analyze", "verify", unit], check=False)
    # verify exits 0 even on unknown keys: any message at all is a failure.
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    score = _exposure(unit)
    print(f"{case}: exposure {score}")
    assert score <= EXPOSURE_LIMIT


def test_unit_options_follow_variables(rendered: dict[str, Path]) -> None:
    def lines(case: str) -> list[str]:
        return (rendered[case] / "distsync.service").read_text().splitlines()

    assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6" in lines("defaults")
    assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK" in lines("torrent")
    assert not [line for line in lines("defaults") if line.startswith("IPAddress")]
    assert {"IPAddressDeny=any", "IPAddressAllow=10.0.0.0/8 localhost"} <= set(lines("ip_allow"))
    assert "ReadWritePaths=/data/out /var/lib/distsync /srv/app" in lines("hook_paths")
    assert "WatchdogSec=0" in lines("hook_paths")


def _load(rendered: dict[str, Path], case: str) -> Config:
    path = rendered[case] / "distsyncd.toml"
    path.chmod(0o600)
    return load_config(path)


def test_rendered_config_loads_with_the_engine(rendered: dict[str, Path]) -> None:
    cfg = _load(rendered, "s3")
    assert cfg.storage == "S3" and cfg.storage_bucket == AWKWARD
    assert str(cfg.output_dir) == "/srv/distsync" and str(cfg.state_dir) == "/var/lib/distsync"
    assert cfg.prefix == "fleet/v3/"
    assert (cfg.poll_interval, cfg.poll_jitter, cfg.hook_timeout) == (7, 0, 30)
    assert cfg.on_update == ("/usr/local/bin/deploy", "--name", 'it\'s "x"')
    assert dict(cfg.pins) == {"app.tar.gz": "41", 'odd name"': "7"}
    assert cfg.aws.region == "eu-west-1" and cfg.aws.secret_key == "s3cr3t/+="
    assert cfg.aws.endpoint == "http://10.0.0.1:9000" and cfg.aws.session_token is None
    assert cfg.metrics_address == ("127.0.0.1", 9717)
    assert cfg.groups == ("web", 'eu "west"')
    assert cfg.names == ("myapp-*.tar.gz", "nginx.conf")


def test_rendered_config_carries_the_torrent_keys_only_for_the_swarm(
    rendered: dict[str, Path],
) -> None:
    cfg = _load(rendered, "swarm")
    assert cfg.storage == "S3+BitTorrent"
    assert (cfg.torrent_port, cfg.torrent_address, cfg.tracker_url) == (
        7000,
        "10.1.2.3",
        "http://tracker.example:6969/announce",
    )
    assert (cfg.torrent_seed_seconds, cfg.torrent_s3_readers) == (120, 4)
    assert (cfg.torrent_web_seed_delay, cfg.torrent_stall_seconds) == (45, 90)
    assert "Torrent" not in (rendered["s3"] / "distsyncd.toml").read_text()
    defaults = Config(path=Path("x"), secret=b"x" * 32, storage_bucket="b")
    role = _yaml(ROLE / "defaults" / "main.yml")  # the role's defaults are the engine's
    assert role["distsync_daemon_torrent_port"] == defaults.torrent_port
    assert role["distsync_daemon_torrent_seed_seconds"] == defaults.torrent_seed_seconds
    assert role["distsync_daemon_torrent_s3_readers"] == defaults.torrent_s3_readers
    assert role["distsync_daemon_torrent_web_seed_delay"] == defaults.torrent_web_seed_delay
    assert role["distsync_daemon_torrent_stall_seconds"] == defaults.torrent_stall_seconds


def test_rendered_config_carries_the_releases(rendered: dict[str, Path]) -> None:
    app, image = _load(rendered, "releases").releases
    assert (app.match, str(app.dir), app.keep, app.unpack) == ("app-*.tar.gz", "/srv/app", 2, True)
    assert app.health_check == ("/usr/bin/curl", "-fsS", 'http://127.0.0.1:8080/"h"')
    assert (app.health_timeout, app.pre_activate) == (30, ())
    assert app.post_activate == ("/bin/systemctl", "reload", "app")
    assert (image.match, str(image.dir), image.keep, image.unpack) == (
        "image.tar",
        "/srv/image",
        5,
        False,
    )
    assert image.health_check == image.pre_activate == image.post_activate == ()
    assert image.health_timeout == 60
    unit = (rendered["releases"] / "distsync.service").read_text().splitlines()
    assert "ReadWritePaths=/srv/distsync /var/lib/distsync /srv/app /srv/image" in unit
    assert _load(rendered, "defaults").releases == ()


def test_rendered_config_for_local_storage_has_no_aws_table(rendered: dict[str, Path]) -> None:
    assert "[AwsCreds]" not in (rendered["local"] / "distsyncd.toml").read_text()
    cfg = _load(rendered, "local")
    assert cfg.storage == "Local" and cfg.on_update == () and not cfg.pins
    assert cfg.metrics_address is None  # off unless asked for
    assert cfg.groups == () and cfg.names is None  # every server, every name
    assert (cfg.poll_interval, cfg.poll_jitter, cfg.hook_timeout) == (15, 5, 300)


def test_rendered_config_for_swift_has_swift_creds_only(rendered: dict[str, Path]) -> None:
    text = (rendered["swift"] / "distsyncd.toml").read_text()
    assert "[AwsCreds]" not in text and "Password" not in text
    cfg = _load(rendered, "swift")
    assert cfg.storage == "Swift" and cfg.storage_bucket == "distsync-prod"
    assert cfg.swift is not None and not cfg.swift.keystone
    assert (cfg.swift.auth_url, cfg.swift.username) == (
        "https://swift.example/auth/v1.0",
        "acct:fleet",
    )
    assert cfg.swift.api_key == 'k"ey\\1'


def test_validate_command_accepts_good_and_refuses_bad(
    rendered: dict[str, Path], tmp_path: Path
) -> None:
    """The configuration tasks' validate: command, run the way Ansible runs it."""
    config = rendered["local"] / "distsyncd.toml"
    command = (rendered["local"] / "validate.txt").read_text()

    def validate(text: str) -> subprocess.CompletedProcess[str]:
        candidate = tmp_path / "candidate.toml"
        candidate.write_text(text)
        candidate.chmod(0o600)
        # Ansible substitutes the candidate's path with %, then splits like a shell.
        return subprocess.run(
            shlex.split(command % str(candidate)), capture_output=True, text=True, check=False
        )

    good = config.read_text()
    assert validate(good).returncode == 0
    refused = validate(good.replace('"/srv/distsync"', '"/elsewhere"'))
    assert refused.returncode != 0
    assert "OutputDir is /elsewhere, the role allows only /srv/distsync" in refused.stderr
    assert validate(good.replace("PollInterval = 15.0", "PollInterval = 0.0")).returncode != 0
    assert validate(good.replace("SharedSecret", "SharedSecrets")).returncode != 0


# -- the payload packer ---------------------------------------------------------------------


def test_payload_is_reproducible_and_clean(tmp_path: Path) -> None:
    packer = ROLE / "files" / "pack_payload.py"
    python = REPO / ".venv" / "bin" / "python"
    source = tmp_path / "python"
    shutil.copytree(REPO / "python", source, ignore=shutil.ignore_patterns("build"))
    (source / "distsync" / "__pycache__").mkdir(exist_ok=True)
    (source / "distsync" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"junk")
    (source / "distsync.egg-info").mkdir(exist_ok=True)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "dep-1.0-py3-none-any.whl").write_bytes(b"wheel")
    first = sh([python, packer, tmp_path / "a.tar", "--source", source, "--wheelhouse", wheels])
    os.utime(source / "pyproject.toml", (0, 0))  # mtimes must not matter
    second = sh([python, packer, tmp_path / "b.tar", "--source", source, "--wheelhouse", wheels])
    assert first.stdout == second.stdout
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    with tarfile.open(tmp_path / "a.tar") as tar:
        names = tar.getnames()
    assert "source/pyproject.toml" in names and "wheels/dep-1.0-py3-none-any.whl" in names
    assert not [n for n in names if "__pycache__" in n or ".egg-info" in n or "/build/" in n]


# -- lint --------------------------------------------------------------------------------------


@pytest.mark.skipif(
    not (REPO / ".venv" / "bin" / "ansible-lint").exists(), reason="no ansible-lint"
)
def test_ansible_lint_production_profile() -> None:
    venv_bin = REPO / ".venv" / "bin"
    env = dict(os.environ, PATH=f"{venv_bin}:{os.environ['PATH']}", NO_COLOR="1")
    proc = subprocess.run(
        [venv_bin / "ansible-lint", "--profile", "production", "roles/", "playbooks/"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
