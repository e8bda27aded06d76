"""Issue 19, signed uploads: a compromised server cannot publish to the fleet.

Every server's config holds the full SharedSecret (it must: it decrypts every artifact), so
whoever reads one can seal a manifest the secret opens. What they lack is the uploader's
``SigningKey``. One test per attack, python-tuf style, every command a real ``distsync``
process; the attacks that matter on both kinds of store run on a directory and on S3 (a moto
server, set up by ``distsync setup --storage s3`` itself). The attacker's hands are the test
code's: it holds the secret, as a server's config does, and writes the bucket directly.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from adversary import PREFIX, AnySite, log_key
from distsync.config import load_config
from distsync.crypto import stream
from distsync.crypto.signing import SigningKey, format_key
from distsync.sealed import seal_record_body
from distsync.signed import open_signed
from distsync.store_record import STORE_RECORD, new_store_record, open_store_record
from test_local_flow import installs, make_file, sha256_file, tomllib, write_toml

EVIL = b"#!/bin/sh\necho owned\n"


@pytest.fixture(params=["local", "s3"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AnySite]:
    if request.param == "local":
        made = AnySite.local(tmp_path)
    else:
        made = AnySite.s3(tmp_path, request.getfixturevalue("moto_server"))
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def local_site(tmp_path: Path) -> Iterator[AnySite]:
    made = AnySite.local(tmp_path)
    try:
        yield made
    finally:
        made.close()


# -- an attacker's hands: the secret from a server's config, no signing key --------------------


def forged_body(site: AnySite, name: str, content: bytes) -> dict[str, Any]:
    """A complete manifest body for ``content`` under ``name``, its object encrypted with the
    secret and stored: everything a genuine upload has but the signature."""
    secret = load_config(site.daemon_conf).secret
    chunk_size = 1 << 20
    out = io.BytesIO()
    stream.encrypt_stream(secret, io.BytesIO(content), out, chunk_size=chunk_size)
    object_key = f"{PREFIX}objects/{uuid.uuid4().hex}"
    site.store.put(object_key, out.getvalue())
    return {
        "name": name,
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "object_key": object_key,
        "object_size": len(out.getvalue()),
        "chunk_size": chunk_size,
        "uploaded_at": time.time(),
        "uploader": "ci",
        "mode": 0o755,
        "format": "v3",
        "torrent": None,
    }


def new_key_pair(site: AnySite) -> dict[str, str]:
    proc = site.cli("keys", "new", "--json")
    assert proc.returncode == 0, proc.stderr
    pair: dict[str, str] = json.loads(proc.stdout)
    return pair


def trusted_signers(site: AnySite) -> list[str]:
    return list(tomllib.loads(site.daemon_conf.read_text())["TrustedSigners"])


def rejected(log: str, seq: int, reason: str) -> bool:
    return re.search(rf"ignoring log entry {seq}: .*{reason}", log) is not None


# -- forgeries with a server's config ------------------------------------------------------------


def test_upload_with_a_server_config_is_refused(site: AnySite) -> None:
    """`distsync upload -c distsyncd.toml`: the config that worked as is before signing."""
    site.upload(make_file(site.root / "app.bin", b"release 1\n"))
    before = site.store.keys(PREFIX)
    evil = make_file(site.root / "evil", EVIL, 0o755)
    proc = site.cli("upload", "-c", str(site.daemon_conf), str(evil), "--name", "app.bin")
    errors = proc.stderr.decode()
    assert proc.returncode == 2, errors
    assert f"{site.daemon_conf}: SigningKey: is missing" in errors, errors
    assert "a server's config cannot publish" in errors and "Traceback" not in errors
    assert site.store.keys(PREFIX) == before  # not even the object was written
    assert site.once().returncode == 0
    assert (site.out / "app.bin").read_bytes() == b"release 1\n"


def test_manifest_forged_with_the_secret_is_rejected_by_every_daemon(site: AnySite) -> None:
    site.upload(make_file(site.root / "app.bin", b"release 1\n"))
    other = site.sibling(site.root / "server2")
    watching = other.start_daemon()
    watching.wait_log(r"installed app\.bin version 1 ")
    assert site.once().returncode == 0

    forged = site.append_forged(forged_body(site, "app.bin", EVIL))
    proc = site.once()
    log = proc.stderr.decode()
    assert rejected(log, forged, "manifest is not signed, and this config accepts only"), log
    assert installs(log) == [] and "Traceback" not in log, log
    watching.wait_log(rf"ignoring log entry {forged}: .*manifest is not signed")
    for out in (site.out, other.out):
        assert (out / "app.bin").read_bytes() == b"release 1\n"

    # Rejected once, logged once; the genuine upload after it is installed everywhere.
    v3, sha3 = site.upload(make_file(site.root / "app.bin", b"release 3\n"))
    proc = site.once()
    log = proc.stderr.decode()
    assert [d["version"] for d in installs(log)] == [v3], log
    assert "ignoring log entry" not in log, log
    watching.wait_log(rf"installed app\.bin version {v3} ")
    assert watching.stop() == 0
    assert watching.log().count(f"ignoring log entry {forged}") == 1, watching.log()
    assert sha256_file(site.out / "app.bin") == sha256_file(other.out / "app.bin") == sha3

    listing = site.cli("list", "-c", str(site.upload_conf), "--json")
    assert [row["version"] for row in json.loads(listing.stdout)] == [v3, "1"]
    assert b"1 log entry fails verification and is not shown" in listing.stderr


def test_manifest_signed_by_an_untrusted_key_is_rejected(local_site: AnySite) -> None:
    site = local_site
    site.upload(make_file(site.root / "app.bin", b"release 1\n"))
    mallory = SigningKey.generate()
    forged = site.append_forged(forged_body(site, "app.bin", EVIL), mallory)
    proc = site.once()
    log = proc.stderr.decode()
    reason = rf"is signed by {re.escape(format_key(mallory.public_key))}, which is not one of"
    assert rejected(log, forged, reason), log
    assert (site.out / "app.bin").read_bytes() == b"release 1\n"


def test_signed_manifest_replayed_at_a_new_log_key_is_rejected(site: AnySite) -> None:
    src = site.root / "app.bin"
    site.upload(make_file(src, b"old release\n"))
    _v2, sha2 = site.upload(make_file(src, b"new release\n"))
    assert site.once().returncode == 0

    # The old, validly signed manifest, copied byte for byte to the next log number.
    site.store.put(log_key(3), site.store.get(log_key(1)))
    site.forge_marker(3)
    proc = site.once()
    log = proc.stderr.decode()
    # Refused by the signature, which covers the key, before anything is decrypted.
    assert rejected(log, 3, "the signature of this manifest does not verify"), log
    assert installs(log) == [], log
    assert sha256_file(site.out / "app.bin") == sha2


def test_content_resealed_with_the_secret_under_a_signed_manifest_is_rejected(
    site: AnySite,
) -> None:
    """The chunks' MACs are keyed by the secret every server holds: other content sealed
    under the very header of a signed upload's object passes every MAC. The signed manifest's
    digest of the chunk tags refuses it (a fetch checks that instead of the plaintext's
    SHA-256)."""
    src = site.root / "app.bin"
    site.upload(make_file(src, b"release 1\n"))
    assert site.once().returncode == 0
    v2, _sha2 = site.upload(make_file(src, b"release 2\n"))
    body = site.manifest_body(int(v2))
    header = site.store.get(body["object_key"])[: stream.HEADER_LEN]
    salt = stream.StreamDecryptor(site.secret, header).header.salt
    resealer = stream.StreamEncryptor(site.secret, body["chunk_size"], salt=salt)
    assert resealer.header.raw == header
    evil = b"owned :-(\n"
    assert len(evil) == body["size"]
    sealed = io.BytesIO()
    stream.encrypt_with(resealer, io.BytesIO(evil), sealed)
    site.store.put(body["object_key"], sealed.getvalue())

    proc = site.once()
    log = proc.stderr.decode()
    assert proc.returncode != 0, log
    assert re.search(
        rf"ERROR rejected app\.bin version {v2}: .*does not match the manifest's chunk tags", log
    ), log
    assert installs(log) == [], log
    assert (site.out / "app.bin").read_bytes() == b"release 1\n"


def test_the_signing_key_in_a_server_config_is_refused(local_site: AnySite) -> None:
    """A server holding the key could publish: the daemon will not run with one."""
    site = local_site
    site.upload(make_file(site.root / "app.bin", b"release 1\n"))
    signing_key = tomllib.loads(site.upload_conf.read_text())["SigningKey"]
    site.update_daemon_conf(SigningKey=signing_key)
    for args in (("--once",), ()):
        proc = site.cli("daemon", "-c", str(site.daemon_conf), *args, timeout=60)
        errors = proc.stderr.decode()
        assert proc.returncode == 2, errors
        assert "SigningKey: does not belong in a server's config" in errors, errors
        assert signing_key[8:] not in errors
    assert not (site.out / "app.bin").exists()


def test_forged_store_record_cannot_roll_a_daemon_back(local_site: AnySite) -> None:
    """A store record sealed with a server's secret, naming a new store, would start the
    daemon afresh; with the newest log entry deleted, it would install an older version."""
    site = local_site
    src = site.root / "app.bin"
    site.upload(make_file(src, b"release 1\n"))
    _v2, sha2 = site.upload(make_file(src, b"release 2\n"))
    assert site.once().returncode == 0

    key = PREFIX + "store"
    forged = new_store_record(time.time(), {"atomic_create": True})
    site.store.put(key, seal_record_body(STORE_RECORD, site.secret, key, forged.body()))
    site.store.delete(log_key(2))
    proc = site.once()
    log = proc.stderr.decode()
    assert f"the store record names store {forged.store_id}, but no trusted signer" in log, log
    assert installs(log) == [] and "is a new store" not in log, log
    assert sha256_file(site.out / "app.bin") == sha2


def test_forged_store_record_cannot_change_the_log_layout(local_site: AnySite) -> None:
    """A store record sealed with a server's secret, keeping the store id but claiming that
    create is not atomic (or naming another web seed), is not acted on: uploads keep the
    store's layout and the daemon says why it ignores the record."""
    site = local_site
    src = site.root / "app.bin"
    site.upload(make_file(src, b"release 1\n"))
    key = PREFIX + "store"
    genuine = open_store_record(site.secret, key, site.store.get(key), "the test's store")
    forged = replace(genuine, capabilities={"atomic_create": False})
    site.store.put(key, seal_record_body(STORE_RECORD, site.secret, key, forged.body()))
    version, sha2 = site.upload(make_file(src, b"release 2\n"))  # "2", not a tagged "2.<tag>"
    assert version == "2"
    proc = site.once()
    log = proc.stderr.decode()
    assert proc.returncode == 0, log
    assert "the store record is signed by no trusted signer; its log layout and web seed " in log
    assert sha256_file(site.out / "app.bin") == sha2


def test_a_distsync01_object_is_never_installed(local_site: AnySite) -> None:
    """Go-format objects carry no signature, no name, no version: the fleet protocol is v3
    only, and even a manifest signed by the uploader's own key cannot point a daemon at one."""
    site = local_site
    plain = make_file(site.root / "plain", EVIL)
    legacy = site.root / "legacy.bin"
    proc = site.cli("encrypt", "-c", str(site.upload_conf), str(plain), "-o", str(legacy),
                    "--format", "distsync01")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    object_key = f"{PREFIX}objects/{uuid.uuid4().hex}"
    site.store.put(object_key, legacy.read_bytes())
    body = forged_body(site, "app.bin", EVIL)
    body.update(object_key=object_key)
    as_v3 = site.append_sealed(body)  # claims v3: the object is not one
    body.update(format="distsync01", object_size=legacy.stat().st_size)
    as_legacy = site.append_sealed(body)

    proc = site.once()
    log = proc.stderr.decode()
    assert rejected(log, as_legacy, "manifest field format is out of range"), log
    assert re.search(rf"rejected app\.bin version {as_v3}: ", log), log
    assert installs(log) == [] and not (site.out / "app.bin").exists(), log


# -- what an uploader's config sees ------------------------------------------------------------


def test_list_and_download_on_an_uploader_config_skip_forged_entries(
    local_site: AnySite,
) -> None:
    site = local_site
    v1, sha1 = site.upload(make_file(site.root / "app.bin", b"release 1\n"))
    forged = site.append_forged(forged_body(site, "app.bin", EVIL))

    listing = site.cli("list", "-c", str(site.upload_conf), "--json")
    assert listing.returncode == 0, listing.stderr
    assert [row["version"] for row in json.loads(listing.stdout)] == [v1]
    assert b"manifest is not signed" in listing.stderr

    fetched = site.root / "fetched"
    fetched.mkdir()
    proc = site.cli("download", "-c", str(site.upload_conf), "app.bin", "-o", str(fetched))
    assert proc.returncode == 0, proc.stderr
    assert sha256_file(fetched / "app.bin") == sha1
    proc = site.cli("download", "-c", str(site.upload_conf), "app.bin", "-o", str(fetched),
                    "--version", str(forged))  # fmt: skip
    assert proc.returncode == 3 and b"manifest is not signed" in proc.stderr, proc.stderr
    assert sha256_file(fetched / "app.bin") == sha1


def test_forged_manifest_cannot_make_an_upload_be_skipped(local_site: AnySite) -> None:
    """A forgery claiming the content CI is about to upload must not make `upload` believe it
    is there already (the fleet, which rejects the forgery, would never get it)."""
    site = local_site
    site.upload(make_file(site.root / "app.bin", b"release 1\n"))
    upcoming = make_file(site.root / "app.bin", b"release 2\n")
    site.append_forged(forged_body(site, "app.bin", upcoming.read_bytes()))
    proc = site.cli("upload", "-c", str(site.upload_conf), str(upcoming))
    assert proc.returncode == 0, proc.stderr
    assert b"is unchanged" not in proc.stderr and b"version 3\t" in proc.stdout
    proc = site.once()
    assert [d["version"] for d in installs(proc.stderr.decode())] == ["3"]
    assert (site.out / "app.bin").read_bytes() == b"release 2\n"


# -- operating signed stores ----------------------------------------------------------------


def test_rotation_with_two_trusted_keys(local_site: AnySite) -> None:
    """docs/operations.md's order: trust the new key everywhere, switch CI, drop the old key."""
    site = local_site
    old = tomllib.loads(site.upload_conf.read_text())["SigningKey"]
    old_public = trusted_signers(site)[0]
    src = site.root / "app.bin"
    new = new_key_pair(site)
    old_ci = site.root / "old-ci.toml"
    write_toml(old_ci, tomllib.loads(site.upload_conf.read_text()))

    site.update_daemon_conf(TrustedSigners=[old_public, new["public_key"]])
    v1, sha1 = site.upload(make_file(src, b"signed by the old key\n"))
    proc = site.once()
    assert [d["version"] for d in installs(proc.stderr.decode())] == [v1], proc.stderr
    assert sha256_file(site.out / "app.bin") == sha1

    site.update_upload_conf(SigningKey=new["signing_key"])  # CI switches
    show = site.cli("keys", "show", "-c", str(site.upload_conf))
    assert show.returncode == 0 and show.stdout.decode().strip() == new["public_key"]
    assert old[8:] not in show.stdout.decode() + show.stderr.decode()
    v2, sha2 = site.upload(make_file(src, b"signed by the new key\n"))
    proc = site.once()
    assert [d["version"] for d in installs(proc.stderr.decode())] == [v2], proc.stderr

    site.update_daemon_conf(TrustedSigners=[new["public_key"]])  # the old key is dropped
    v3 = site.cli("upload", "-c", str(old_ci), str(make_file(src, b"old key, too late\n")))
    assert v3.returncode == 0, v3.stderr  # that CI config trusts its own key: it can write
    proc = site.once()
    log = proc.stderr.decode()
    assert rejected(log, 3, rf"signed by {re.escape(old_public)}, which is not one of"), log
    assert sha256_file(site.out / "app.bin") == sha2
    v4, sha4 = site.upload(make_file(src, b"new key again\n"))
    proc = site.once()
    assert [d["version"] for d in installs(proc.stderr.decode())] == [v4], proc.stderr
    assert sha256_file(site.out / "app.bin") == sha4


def test_old_store_without_signers_still_works_and_warns(local_site: AnySite) -> None:
    """A store set up before signing: configs without keys, an unsigned store record."""
    site = local_site
    key = PREFIX + "store"
    site.store.put(key, open_signed(key, site.store.get(key), "store record").sealed)
    values = tomllib.loads(site.upload_conf.read_text())
    del values["SigningKey"]
    write_toml(site.upload_conf, values)
    site.update_daemon_conf(TrustedSigners=None)
    how = "turn signing on with `distsync keys new`"

    proc = site.cli("upload", "-c", str(site.upload_conf), str(make_file(site.root / "a", b"1\n")))
    assert proc.returncode == 0 and how.encode() in proc.stderr, proc.stderr
    assert not site.store.get(log_key(1)).startswith(b"DSG3")  # unsigned, as before
    proc = site.cli("list", "-c", str(site.upload_conf))
    assert proc.returncode == 0 and how.encode() in proc.stderr, proc.stderr
    proc = site.once()
    log = proc.stderr.decode()
    assert proc.returncode == 0 and how in log, log
    assert [d["version"] for d in installs(log)] == ["1"], log

    # Turning signing on later: a new pair, the public key on the servers first.
    pair = new_key_pair(site)
    site.update_daemon_conf(TrustedSigners=[pair["public_key"]])
    site.update_upload_conf(SigningKey=pair["signing_key"])
    v2, sha2 = site.upload(make_file(site.root / "a", b"2\n"))
    forged = site.append_forged(forged_body(site, "a", EVIL))
    proc = site.once()
    log = proc.stderr.decode()
    assert [d["version"] for d in installs(log)] == [v2], log
    assert rejected(log, forged, "manifest is not signed"), log
    # The store record is unsigned, and names the store this daemon follows: nothing to say.
    assert how not in log and "not following" not in log, log
    assert sha256_file(site.out / "a") == sha2


def test_an_upload_the_fleet_does_not_trust_fails_its_wait_with_the_reason(
    local_site: AnySite,
) -> None:
    """CI switched to a new key before the servers trust it (the rotation order reversed):
    `upload --wait` ends as soon as a server reports the entry rejected, and says why,
    instead of waiting out its timeout; `distsync status` shows the rejection too."""
    site = local_site
    site.upload(make_file(site.root / "app.bin", b"release 1\n"))
    daemon = site.start_daemon()
    daemon.wait_log(r"installed app\.bin version 1 ")
    pair = new_key_pair(site)
    site.update_upload_conf(SigningKey=pair["signing_key"])
    started = time.monotonic()
    proc = site.cli("upload", "-c", str(site.upload_conf), "--wait", "--timeout", "120",
                    str(make_file(site.root / "app.bin", b"release 2\n")))  # fmt: skip
    out, errors = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 6, (out, errors)
    assert time.monotonic() - started < 60, "the wait ran into its timeout"
    assert f"is signed by {pair['public_key']}, which is not one of" in out + errors
    status = site.cli("status", "-c", str(site.upload_conf))
    assert status.returncode in (0, 1), status.stderr
    assert re.search(r"rejects log entry 2: .*not one of", status.stdout.decode()), status.stdout
    assert daemon.stop() == 0
    assert (site.out / "app.bin").read_bytes() == b"release 1\n"


def test_keys_new_prints_config_lines_and_keys_show_the_public_key(local_site: AnySite) -> None:
    """What an operator pastes: `keys new` prints TOML the configs load as they are."""
    site = local_site
    proc = site.cli("keys", "new")
    assert proc.returncode == 0, proc.stderr
    lines = tomllib.loads(proc.stdout.decode())
    assert set(lines) == {"SigningKey", "TrustedSigners"}
    site.update_upload_conf(SigningKey=lines["SigningKey"])
    site.update_daemon_conf(TrustedSigners=lines["TrustedSigners"])
    show = site.cli("keys", "show", "-c", str(site.upload_conf))
    assert show.returncode == 0, show.stderr
    assert [show.stdout.decode().strip()] == lines["TrustedSigners"]
    v1, sha1 = site.upload(make_file(site.root / "app.bin", b"signed by the pasted key\n"))
    assert [d["version"] for d in installs(site.once().stderr.decode())] == [v1]
    assert sha256_file(site.out / "app.bin") == sha1

    show = site.cli("keys", "show", "-c", str(site.daemon_conf))  # a server's: no key to show
    errors = show.stderr.decode()
    assert show.returncode == 2 and show.stdout == b"", errors
    assert f"{site.daemon_conf}: SigningKey: is not set" in errors and "Traceback" not in errors
    misuse = site.cli("keys", "new", "-c", str(site.upload_conf))
    assert misuse.returncode == 2 and b"keys new reads no config" in misuse.stderr
