# Apache License 2.0 (see LICENSE)
"""distsync_upload and distsync_info against a real local store (no fakes of the engine)."""

import json
import os

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args
from ansible_collections.distsync.core.plugins.modules import distsync_info, distsync_upload
from distsync.provision import SetupOptions, run_setup


class ModuleExit(Exception):
    def __init__(self, result, failed):
        super().__init__(result)
        self.result = result
        self.failed = failed


@pytest.fixture(autouse=True)
def capture_exits(monkeypatch):
    def exit_json(self, **result):
        raise ModuleExit(result, False)

    def fail_json(self, **result):
        raise ModuleExit(result, True)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)


@pytest.fixture
def setup(tmp_path):
    result = run_setup(
        SetupOptions(
            storage="local",
            bucket=str(tmp_path / "bucket"),
            output_dir=str(tmp_path / "out"),
            upload_config=str(tmp_path / "up.toml"),
            daemon_config=str(tmp_path / "daemon.toml"),
        )
    )
    artifact = tmp_path / "app.tar.gz"
    artifact.write_bytes(os.urandom(50000))
    return result.upload_config, artifact


def run(module, args):
    with patch_module_args(args), pytest.raises(ModuleExit) as exit_info:
        module.main()
    return exit_info.value


def test_upload_is_idempotent_by_content(setup):
    config, artifact = setup
    first = run(distsync_upload, {"src": str(artifact), "config": str(config)})
    assert not first.failed and first.result["changed"] is True
    assert first.result["version"] == "1" and first.result["previous"] is None
    second = run(distsync_upload, {"src": str(artifact), "config": str(config)})
    assert second.result["changed"] is False and second.result["version"] == "1"
    forced = run(distsync_upload, {"src": str(artifact), "config": str(config), "force": True})
    assert forced.result["changed"] is True and forced.result["version"] == "2"


def test_check_mode_uploads_nothing_and_diff_shows_both_sides(setup):
    config, artifact = setup
    run(distsync_upload, {"src": str(artifact), "config": str(config)})
    artifact.write_bytes(b"new content")
    args = {
        "src": str(artifact),
        "config": str(config),
        "_ansible_check_mode": True,
        "_ansible_diff": True,
    }
    checked = run(distsync_upload, args)
    assert checked.result["changed"] is True and checked.result["version"] is None
    assert "version: 1" in checked.result["diff"]["before"]
    assert "size: 11" in checked.result["diff"]["after"]
    listed = run(distsync_info, {"config": str(config)})
    assert [v["version"] for v in listed.result["versions"]] == ["1"]


def test_info_lists_newest_first_and_filters(setup):
    config, artifact = setup
    run(distsync_upload, {"src": str(artifact), "config": str(config), "name": "a"})
    run(distsync_upload, {"src": str(artifact), "config": str(config), "name": "b"})
    listed = run(distsync_info, {"config": str(config)})
    assert [v["name"] for v in listed.result["versions"]] == ["b", "a"]
    assert listed.result["names"] == ["a", "b"] and listed.result["changed"] is False
    only = run(distsync_info, {"config": str(config), "name": "a"})
    assert [v["version"] for v in only.result["versions"]] == ["1"]


def test_errors_are_one_line_and_leak_no_secret(setup, tmp_path):
    config, artifact = setup
    secret = next(ln for ln in config.read_text().splitlines() if ln.startswith("SharedSecret"))
    bad = tmp_path / "bad.toml"
    bad.write_text(secret + '\nStorageBucket = "x"\nStorage = "nope"\n')
    failed = run(distsync_upload, {"src": str(artifact), "config": str(bad)})
    assert failed.failed
    assert "Storage: unknown value" in failed.result["msg"]
    assert secret.split('"')[1] not in json.dumps(failed.result)
    missing = run(distsync_upload, {"src": str(tmp_path / "nope"), "config": str(config)})
    assert missing.failed and "nope" in missing.result["msg"]


def test_upload_is_signed_with_the_configs_key(setup):
    config, artifact = setup
    from distsync.config import load_config
    from distsync.crypto.signing import format_key

    done = run(distsync_upload, {"src": str(artifact), "config": str(config)})
    public = format_key(load_config(str(config)).signing_key.public_key)
    assert not done.failed and done.result["signed_by"] == public
    bucket = config.parent / "bucket" / "distsync" / "v3" / "log" / ("0" * 19 + "1")
    assert bucket.read_bytes().startswith(b"DSG3")
    assert "SigningKey" not in json.dumps(done.result)


def test_a_server_config_cannot_upload_through_the_module(setup):
    config, artifact = setup
    daemon = config.parent / "daemon.toml"
    refused = run(distsync_upload, {"src": str(artifact), "config": str(daemon)})
    assert refused.failed and "SigningKey: is missing" in refused.result["msg"]
    listed = run(distsync_info, {"config": str(config)})
    assert listed.result["versions"] == []
