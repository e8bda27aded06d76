"""What the attack tests (issue 11) share: a site on either store, and an attacker's hands.

A ``Site`` (tests/system/test_local_flow.py) is one setup: the uploader's and the daemon's
configs, an OutputDir and the daemons started, every command a real ``distsync`` process.
``AnySite`` adds the store behind it: ``Storage = "Local"`` (a directory) or S3 (a moto
server, set up by ``distsync setup --storage s3`` itself, so it has its store record), and a
``Backend`` through which a test reads and writes the bucket behind distsync's back, as an
attacker with write access (and, for the hostile-manifest tests, the secret and the
uploader's signing key; for the forgery tests of issue 19, the secret alone, as a server's
config holds it) would.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from distsync.config import load_config
from distsync.crypto.signing import SigningKey
from distsync.manifest import MANIFEST
from distsync.sealed import open_sealed, seal_record_body
from distsync.signed import open_signed, sign_sealed
from s3server import ACCESS_KEY, SECRET_KEY, MotoServer
from test_local_flow import POLL, Site

__all__ = ["PREFIX", "AnySite", "Backend", "log_key"]

PREFIX = "distsync/v3/"


def log_key(seq: int) -> str:
    return f"{PREFIX}log/{seq:020d}"


class Backend(Protocol):
    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def delete(self, key: str) -> None: ...

    def keys(self, under: str) -> list[str]: ...


@dataclass
class LocalBackend:
    root: Path

    def put(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".attacker")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # a new inode, as a real writer's would be

    def get(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def delete(self, key: str) -> None:
        (self.root / key).unlink()

    def keys(self, under: str) -> list[str]:
        base = self.root / under
        if not base.is_dir():
            return []
        return sorted(under + p.name for p in base.iterdir() if not p.name.startswith("."))


@dataclass
class S3Backend:
    client: Any
    bucket: str

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def get(self, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def keys(self, under: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=under
        )
        return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))

    def empty(self) -> None:
        for key in self.keys(""):
            self.delete(key)


@dataclass
class AnySite(Site):
    backend: Backend | None = None
    endpoint: str | None = None

    @classmethod
    def local(cls, root: Path) -> AnySite:
        base = Site.create(root)
        site = cls(**{f: getattr(base, f) for f in Site.__dataclass_fields__})
        site.backend = LocalBackend(site.bucket)
        return site

    @classmethod
    def s3(cls, root: Path, moto: MotoServer) -> AnySite:
        site = cls(
            root=root,
            bucket=root / "no-local-bucket",
            out=root / "out",
            upload_conf=root / "conf" / "upload.toml",
            daemon_conf=root / "conf" / "daemon.toml",
            endpoint=moto.endpoint,
        )
        (root / "home").mkdir(parents=True, exist_ok=True)
        setup_id = "t" + uuid.uuid4().hex[:10]
        site.setup_s3(setup_id)
        site.backend = S3Backend(moto.client(), f"distsync-{setup_id}")
        return site

    def setup_s3(self, setup_id: str, *extra: str) -> None:
        assert self.endpoint is not None
        proc = self.cli(
            "setup",
            "--storage",
            "s3",
            "--endpoint",
            self.endpoint,
            "--setup-id",
            setup_id,
            "--output-dir",
            str(self.out),
            "--upload-config",
            str(self.upload_conf),
            "--daemon-config",
            str(self.daemon_conf),
            "--non-interactive",
            *extra,
        )
        assert proc.returncode == 0, proc.stderr
        self.update_daemon_conf(PollInterval=POLL, PollJitter=0, StateDir=str(self.root / "state"))

    def env(self) -> dict[str, str]:
        env = super().env()
        # moto takes any credentials; setup itself runs with these.
        env.update(
            AWS_EC2_METADATA_DISABLED="true",
            AWS_ACCESS_KEY_ID=ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=SECRET_KEY,
            AWS_CONFIG_FILE=str(self.root / "no-aws-config"),
            AWS_SHARED_CREDENTIALS_FILE=str(self.root / "no-aws-credentials"),
        )
        return env

    @property
    def store(self) -> Backend:
        assert self.backend is not None
        return self.backend

    @property
    def secret(self) -> bytes:
        return load_config(self.upload_conf).secret

    # -- an attacker's hands ---------------------------------------------------------------

    def log_seqs(self) -> list[int]:
        return [int(key.rsplit("/", 1)[1]) for key in self.store.keys(PREFIX + "log/")]

    def flip_byte(self, key: str) -> bytes:
        """Flip one byte in the middle of ``key``; returns what was there."""
        original = self.store.get(key)
        data = bytearray(original)
        data[len(data) // 2] ^= 0x40
        self.store.put(key, bytes(data))
        return original

    def forge_marker(self, latest: int) -> None:
        body = {"latest": latest, "nonce": os.urandom(8).hex()}
        self.store.put(PREFIX + "marker", json.dumps(body).encode())

    def manifest_body(self, seq: int) -> dict[str, Any]:
        """The JSON body of the genuine manifest at ``seq`` (the secret opens it)."""
        key = log_key(seq)
        sealed = open_signed(key, self.store.get(key), "manifest").sealed
        return open_sealed(MANIFEST, self.secret, key, sealed)

    def append_sealed(self, body: dict[str, Any]) -> int:
        """Append a manifest sealed with the secret and signed with the uploader's key (an
        uploader holding both, or a bug), with none of the checks an honest uploader makes;
        returns its sequence number."""
        return self.append_forged(body, load_config(self.upload_conf).signing_key)

    def append_forged(self, body: dict[str, Any], signer: SigningKey | None = None) -> int:
        """Append a manifest sealed with the secret, signed by ``signer`` or not at all (what a
        server's config can write: it holds the secret, not the uploader's key)."""
        seq = max(self.log_seqs(), default=0) + 1
        key = log_key(seq)
        sealed = seal_record_body(MANIFEST, self.secret, key, body)
        self.store.put(key, sealed if signer is None else sign_sealed(signer, key, sealed))
        self.forge_marker(seq)
        return seq

    def close(self) -> None:
        super().close()
        if isinstance(self.backend, S3Backend):
            with contextlib.suppress(Exception):
                self.backend.empty()  # moto keeps objects in memory
