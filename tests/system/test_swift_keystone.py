"""Keystone v3 logins end to end: a real Keystone (Debian's packages) in front of the test Swift.

``distsync setup --storage swift`` runs with the ``OS_*`` variables the openstack client reads,
as a user with the ``swiftoperator`` role; the daemons get a plain ``member`` of the project,
named in the container ACLs by ``project_id:user_id``. The claims of docs/setup-swift.md
are checked by doing them with each identity's own password.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path

import pytest
from distsync.config import load_config
from distsync.errors import StorageError
from distsync.storage.swift import SwiftStore
from keystoneserver import CI, FLEET, KeystoneServer
from swiftfleet import SwiftFleet, artifact
from swiftserver import SwiftServer

pytestmark = pytest.mark.slow  # Keystone takes about a minute to bootstrap


@pytest.fixture(scope="module")
def keystone_swift(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[KeystoneServer, SwiftServer]]:
    keystone = KeystoneServer(tmp_path_factory.mktemp("keystone"))
    with keystone, SwiftServer(tmp_path_factory.mktemp("swift-keystone"), keystone) as swift:
        up = (keystone.startup_seconds, swift.startup_seconds)
        print("Keystone up in {:.1f} s, Swift in {:.1f} s".format(*up))
        yield keystone, swift


def keystone_env(keystone: KeystoneServer, region: str = "RegionOne") -> dict[str, str]:
    return {
        "OS_AUTH_URL": keystone.auth_url,
        "OS_USERNAME": CI.name,
        "OS_PASSWORD": CI.password,
        "OS_PROJECT_NAME": CI.project,
        "OS_USER_DOMAIN_NAME": "Default",
        "OS_PROJECT_DOMAIN_NAME": "Default",
        "OS_REGION_NAME": region,
        "DISTSYNC_SWIFT_DAEMON_KEY": FLEET.password,
    }


def keystone_setup(fleet: SwiftFleet) -> list[str]:
    args = fleet.setup_args("--daemon-user", FLEET.name)
    at = args.index("--auth-url")
    del args[at : at + 2]  # from OS_AUTH_URL
    return args


def test_setup_upload_and_install_with_keystone(
    keystone_swift: tuple[KeystoneServer, SwiftServer], tmp_path: Path
) -> None:
    keystone, swift = keystone_swift
    fleet = SwiftFleet(swift, "distsync-keystone", tmp_path)
    result = fleet.run(*keystone_setup(fleet), env=keystone_env(keystone))
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, err
    referent = keystone.referent(FLEET)
    assert f"checked: {referent} reads, writes its records, and may not write the log" in out
    assert CI.password not in out + err and FLEET.password not in out + err
    fleet.tune_daemon(StateDir=str(tmp_path / "state"), PollInterval=0.2, PollJitter=0)

    uploader, daemon = load_config(fleet.uploader), load_config(fleet.daemon)
    assert uploader.swift is not None and uploader.swift.keystone
    assert daemon.swift is not None and daemon.swift.keystone
    assert (daemon.swift.username, daemon.swift.project_name) == (FLEET.name, "builds")
    assert daemon.swift.region == "RegionOne"

    # The containers live in the project's account, with the member named by its ids.
    token = keystone.token(CI.name, CI.password, CI.project)
    account = keystone.swift_account()
    for name in ("distsync-keystone", "distsync-keystone_segments", "distsync-keystone_daemons"):
        status, _, headers = swift_head(swift, f"/v1/{account}/{name}", token)
        assert status == 204 and headers["x-container-read"] == referent

    source = artifact(tmp_path, "app.tar.gz", 9 << 20)  # an SLO: segments read as the member
    fleet.upload(source)
    assert fleet.daemon_once().returncode == 0
    assert (fleet.installed / "app.tar.gz").read_bytes() == source.read_bytes()

    store = SwiftStore.from_config(daemon, retries=1, backoff=0.05)
    store.put("distsync/v3/peers/node-1", b"record")
    with pytest.raises(StorageError, match="access denied: cannot write distsync/v3/log/"):
        store.put("distsync/v3/log/00000000000000000009", b"forged")


def swift_head(swift: SwiftServer, path: str, token: str) -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", swift.ports["proxy"], timeout=30)
    try:
        conn.request("HEAD", path, headers={"X-Auth-Token": token})
        response = conn.getresponse()
        return response.status, response.read(), {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def test_keystone_failures_are_one_line(
    keystone_swift: tuple[KeystoneServer, SwiftServer], tmp_path: Path
) -> None:
    keystone, swift = keystone_swift
    fleet = SwiftFleet(swift, "distsync-keystone-bad", tmp_path)
    args = keystone_setup(fleet)
    cases = [
        (dict(keystone_env(keystone), OS_PASSWORD="wrong"), "Keystone: the credentials"),
        (keystone_env(keystone, region="Nowhere"), "no object-store endpoint"),
        (dict(keystone_env(keystone), DISTSYNC_SWIFT_DAEMON_KEY="wrong"), "credentials"),
    ]
    for env, message in cases:
        result = fleet.run(*args, env=env)
        err = result.stderr.decode()
        assert result.returncode == 4, err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert "wrong" not in err and CI.password not in err
        assert not fleet.uploader.exists()
