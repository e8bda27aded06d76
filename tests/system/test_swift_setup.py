"""``distsync setup --storage swift`` against a real Swift with tempauth.

Setup runs as the real CLI, as the account's admin, with a second (non-admin) user for the
daemons. Every claim of the container ACLs is then checked by *doing* it: each thing the
daemon must do works, and each thing it must not do answers 403 — through distsync and through
plain HTTP with the daemon's own token.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import tomli_w
import tomllib
from distsync.config import load_config
from distsync.errors import StorageError
from distsync.provision import SetupOptions, SwiftSetup, fill_in_interactively, setup_in_place
from distsync.provision.swift import container_acls
from distsync.storage.swift import SwiftStore
from swiftfleet import SwiftFleet, artifact, setup_env
from swiftserver import ADMIN, OPERATOR, READER, SwiftServer


@pytest.fixture
def fleet(swift_server: SwiftServer, swift_container: str, tmp_path: Path) -> SwiftFleet:
    return SwiftFleet(swift_server, swift_container, tmp_path)


def test_container_acls_keep_the_daemon_out_of_everything_but_its_records() -> None:
    acls = container_acls("c", "test:reader")
    assert acls == {
        "c": {"x-container-read": "test:reader", "x-container-write": ""},
        "c_segments": {"x-container-read": "test:reader", "x-container-write": ""},
        "c_daemons": {"x-container-read": "test:reader", "x-container-write": "test:reader"},
    }
    assert all(v == "" for acl in container_acls("c", None).values() for v in acl.values())


def test_setup_writes_both_configs_and_the_acls_hold(fleet: SwiftFleet) -> None:
    result = fleet.setup()
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert "checked: test:reader reads, writes its records, and may not write the log" in out
    for path in (fleet.uploader, fleet.daemon):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    uploader, daemon = load_config(fleet.uploader), load_config(fleet.daemon)
    assert uploader.secret == daemon.secret
    assert uploader.storage == daemon.storage == "Swift"
    assert uploader.storage_bucket == daemon.storage_bucket == fleet.container
    assert uploader.swift is not None and daemon.swift is not None
    assert (uploader.swift.username, daemon.swift.username) == (ADMIN.name, READER.name)
    assert daemon.output_dir == fleet.installed
    for secret in (ADMIN.key, READER.key):
        assert secret not in out and secret not in result.stderr.decode()

    server, container = fleet.server, fleet.container
    for name in (container, container + "_segments", container + "_daemons"):
        status, _, headers = server.call("HEAD", name)
        assert status == 204
        assert headers["x-container-read"] == READER.name
        expected_write = READER.name if name.endswith("_daemons") else None
        assert headers.get("x-container-write") == expected_write

    # The uploader works; the daemon installs what it uploaded.
    fleet.upload(artifact(fleet.tmp, "app.tar.gz", 10_000))
    assert fleet.daemon_once().returncode == 0
    assert (fleet.installed / "app.tar.gz").stat().st_size == 10_000

    # The daemon's identity, through the engine: its records yes, everything else no.
    store = SwiftStore.from_config(daemon, retries=1, backoff=0.05)
    store.put("distsync/v3/peers/node-1", b"record")
    assert store.get("distsync/v3/peers/node-1") == b"record"
    for key in (
        "distsync/v3/log/00000000000000000002",
        "distsync/v3/marker",
        "distsync/v3/objects/planted",
    ):
        with pytest.raises(StorageError, match=f"access denied: cannot write {key}"):
            store.put(key, b"forged")
    (entry,) = [k for k in server.listing(container) if "/log/" in k]
    with pytest.raises(StorageError, match="access denied"):
        store.delete(entry)

    # ... and as an operator would try it by hand, with the daemon's own token.
    for method, path in (
        ("PUT", f"{container}/distsync/v3/objects/x"),
        ("PUT", f"{container}_segments/x/1/00000001"),
        ("DELETE", f"{container}/{entry}"),
        ("POST", container),  # change the ACLs
        ("PUT", f"{container}-mine"),  # a container of its own
    ):
        status, _, _ = server.call(method, path, user=READER, body=b"x")
        assert status == 403, (method, path, status)

    # The CLI as the daemon: refused for want of a signing key (issue 19), before any request.
    before = server.listing(container), server.listing(container + "_segments")
    big = artifact(fleet.tmp, "forged.bin", 9 << 20)  # more than one SLO segment
    result = fleet.run("upload", "-c", str(fleet.daemon), str(big))
    err = result.stderr.decode()
    assert result.returncode == 2 and "SigningKey: is missing" in err, err
    # With the daemon's identity in a config that would sign (none of the fleet would install
    # it): the store itself refuses. One line, exit 4, nothing left behind.
    values = tomllib.loads(fleet.daemon.read_text())
    values["SigningKey"] = tomllib.loads(fleet.uploader.read_text())["SigningKey"]
    signing_daemon = fleet.tmp / "signing-daemon.toml"
    signing_daemon.write_text(tomli_w.dumps(values))
    signing_daemon.chmod(0o600)
    result = fleet.run("upload", "-c", str(signing_daemon), str(big))
    err = result.stderr.decode()
    assert result.returncode == 4, err
    assert "access denied" in err and len(err.strip().splitlines()) == 1
    assert (server.listing(container), server.listing(container + "_segments")) == before


def test_setup_is_in_place_after_a_run_and_not_before(fleet: SwiftFleet) -> None:
    options = SetupOptions(
        storage="swift",
        bucket=fleet.container,
        output_dir=str(fleet.installed),
        upload_config=str(fleet.uploader),
        daemon_config=str(fleet.daemon),
        swift=SwiftSetup(
            auth_url=fleet.server.auth_url,
            username=ADMIN.name,
            key=ADMIN.key,
            daemon_username=READER.name,
            daemon_key=READER.key,
        ),
    )
    assert not setup_in_place(options)
    assert fleet.setup().returncode == 0
    assert setup_in_place(options)
    fleet.server.call("POST", fleet.container + "_daemons", headers={"X-Container-Write": ""})
    assert not setup_in_place(options)  # an ACL drifted: a re-run would change it


def test_a_wrong_daemon_key_changes_nothing(fleet: SwiftFleet) -> None:
    args = fleet.setup_args("--daemon-user", READER.name)
    env = dict(setup_env(), DISTSYNC_SWIFT_DAEMON_KEY="wrong")
    result = fleet.run(*args, env=env)
    err = result.stderr.decode()
    assert result.returncode == 4, err
    assert "refused the credentials" in err and "wrong" not in err
    assert not fleet.uploader.exists() and not fleet.daemon.exists()
    assert fleet.server.call("HEAD", fleet.container)[0] == 404  # checked before any change


def test_an_admin_as_the_daemon_identity_is_refused(fleet: SwiftFleet) -> None:
    args = fleet.setup_args("--daemon-user", OPERATOR.name)
    result = fleet.run(*args, env=setup_env(daemon=OPERATOR))
    err = result.stderr.decode()
    assert result.returncode == 4, err
    assert "the daemon identity test:operator can write the log" in err
    assert not fleet.daemon.exists()
    assert [k for k in fleet.server.listing(fleet.container) if "setup-check" in k] == []


def test_without_a_daemon_identity_the_daemon_shares_the_uploaders(fleet: SwiftFleet) -> None:
    result = fleet.setup(daemon=None)
    assert result.returncode == 0, result.stderr.decode()
    assert "carries the uploader's credentials" in result.stdout.decode()
    daemon = tomllib.loads(fleet.daemon.read_text())
    assert daemon["SwiftCreds"]["Username"] == ADMIN.name
    status, _, headers = fleet.server.call("HEAD", fleet.container)
    assert status == 204 and "x-container-read" not in headers


def test_setup_refuses_bad_input_with_one_line(fleet: SwiftFleet) -> None:
    cases = [
        ({}, "needs --username (or ST_USER / OS_USERNAME)"),
        ({"ST_USER": ADMIN.name}, "no key or password for test:tester: set ST_KEY"),
        (
            {"ST_USER": ADMIN.name, "ST_KEY": ADMIN.key},
            "no key or password for test:reader: set DISTSYNC_SWIFT_DAEMON_KEY",
        ),
    ]
    for env, message in cases:
        result = fleet.run(*fleet.setup_args("--daemon-user", READER.name), env=env)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr.decode()
    result = fleet.run(*fleet.setup_args("--bucket", "a/b"), env=setup_env())
    assert result.returncode == 2 and "without '/'" in result.stderr.decode()
    assert fleet.setup().returncode == 0
    again = fleet.setup()
    assert again.returncode == 2 and "already exists" in again.stderr.decode()
    assert fleet.run("setup", "--storage", "s3", "--auth-url", "http://x").returncode == 2


def test_the_default_container_name_is_fresh(fleet: SwiftFleet) -> None:
    args = [a for a in fleet.setup_args() if a not in ("--bucket", fleet.container)]
    result = fleet.run(*args, env=setup_env(daemon=None))
    assert result.returncode == 0, result.stderr.decode()
    name = load_config(fleet.uploader).storage_bucket
    assert name.startswith("distsync-") and len(name) == len("distsync-") + 12
    assert fleet.server.call("HEAD", name)[0] == 204
    prefix = load_config(fleet.uploader).prefix
    assert fleet.server.call("DELETE", f"{name}/{prefix}store")[0] == 204  # the store record
    for suffix in ("", "_segments", "_daemons"):
        assert fleet.server.call("DELETE", name + suffix)[0] == 204


def test_the_prompts_ask_for_a_swift_setup_and_hide_keys() -> None:
    answers = iter(["swift", "https://swift.example/auth/v1.0", "acct:ci", "", "acct:fleet", ""])
    secrets = iter(["ci-key", "fleet-key"])
    asked: list[str] = []

    def ask(question: str) -> str:
        asked.append(question)
        return next(answers)

    def ask_secret(question: str) -> str:
        asked.append("secret: " + question)
        return next(secrets)

    options = SetupOptions()
    fill_in_interactively(options, ask, ask_secret=ask_secret)
    swift = options.swift
    assert options.storage == "swift" and (options.bucket or "").startswith("distsync-")
    assert (swift.auth_url, swift.username, swift.key) == (
        "https://swift.example/auth/v1.0",
        "acct:ci",
        "ci-key",
    )
    assert (swift.daemon_username, swift.daemon_key) == ("acct:fleet", "fleet-key")
    assert [q for q in asked if q.startswith("secret: ")] == [
        "secret: Key or password of acct:ci: ",
        "secret: Key or password of acct:fleet: ",
    ]
    assert options.output_dir == "~/distsync"  # Enter keeps the default
