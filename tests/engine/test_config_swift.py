"""``Storage = "Swift"`` and ``[SwiftCreds]``: both auth systems, one clear error per problem."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from distsync.config import SWIFT_KEYS, load_config
from distsync.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

HEAD = 'SharedSecret = "{secret}"\nStorageBucket = "distsync-prod"\nStorage = "swift"\n'
TEMPAUTH = HEAD + (
    '[SwiftCreds]\nAuthURL = "https://swift.example/auth/v1.0"\n'
    'Username = "acct:ci"\nAPIKey = "k3y-value"\n'
)
KEYSTONE = HEAD + (
    '[SwiftCreds]\nAuthURL = "https://keystone.example/v3"\nUsername = "ci"\n'
    'Password = "pa55"\nProjectName = "builds"\nRegion = "RegionTwo"\n'
)


def test_tempauth_and_rackspace_v1(write_config: Callable[..., Path]) -> None:
    cfg = load_config(write_config(TEMPAUTH))
    assert cfg.storage == "Swift" and cfg.storage_bucket == "distsync-prod"
    assert cfg.swift is not None and not cfg.swift.keystone
    assert (cfg.swift.username, cfg.swift.api_key) == ("acct:ci", "k3y-value")
    assert "k3y-value" not in repr(cfg)


def test_keystone_v3_with_default_domains(write_config: Callable[..., Path]) -> None:
    cfg = load_config(write_config(KEYSTONE))
    assert cfg.swift is not None and cfg.swift.keystone
    assert (cfg.swift.project_name, cfg.swift.region) == ("builds", "RegionTwo")
    assert cfg.swift.user_domain_name == cfg.swift.project_domain_name == "Default"
    assert "pa55" not in repr(cfg)


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        (HEAD, "SwiftCreds", 'is required by Storage = "Swift"'),
        (TEMPAUTH.replace('APIKey = "k3y-value"\n', ""), "SwiftCreds.APIKey", "is missing"),
        (TEMPAUTH + 'Password = "p"\n', "SwiftCreds.APIKey", "not both"),
        (TEMPAUTH + 'ProjectName = "p"\n', "SwiftCreds.ProjectName", "goes with Password"),
        (KEYSTONE.replace('ProjectName = "builds"\n', ""), "SwiftCreds.ProjectName", "missing"),
        (TEMPAUTH.replace("https://swift.example", "swift.example"), "SwiftCreds.AuthURL", "URL"),
        (TEMPAUTH.replace('Username = "acct:ci"', 'Username = ""'), "SwiftCreds.Username", ""),
        (TEMPAUTH + "Port = 1\n", "SwiftCreds.Port", "unknown key"),
        (TEMPAUTH.replace('APIKey = "k3y-value"', "APIKey = 7"), "SwiftCreds.APIKey", "string"),
    ],
)
def test_one_line_per_problem_naming_file_and_key(
    write_config: Callable[..., Path], text: str, key: str, problem: str
) -> None:
    path = write_config(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {key}: ") and problem in message
    assert "\n" not in message and "k3y-value" not in message


def test_an_s3_config_may_carry_swift_creds_unused(write_config: Callable[..., Path]) -> None:
    cfg = load_config(write_config(TEMPAUTH.replace('Storage = "swift"', 'Storage = "S3"')))
    assert cfg.storage == "S3" and cfg.swift is not None


def test_readme_documents_every_swift_key() -> None:
    reference = (REPO / "README.md").read_text().split("## Configuration reference", 1)[1]
    assert "`SwiftCreds`" in reference
    for key in SWIFT_KEYS:
        assert f"`{key}`" in reference, f"README's configuration reference lacks {key}"
