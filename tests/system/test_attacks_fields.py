"""Issue 11, authenticated but hostile manifests: an uploader holding the secret (or a bug).

Authentication proves who wrote a manifest, not that its fields are sane. Each test appends
a manifest sealed with the fleet's secret but carrying one hostile field, then a genuine
upload of another name: the daemon must reject the first (one line, no traceback, no
``internal error``), install the second, and ``list`` must keep working.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from adversary import PREFIX, AnySite
from test_local_flow import PART_SUFFIX, installs, make_file, sha256_file


@pytest.fixture
def site(tmp_path: Path) -> Iterator[AnySite]:
    made = AnySite.local(tmp_path)
    try:
        yield made
    finally:
        made.close()


def _set(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        body[field] = value

    return change


HOSTILE: dict[str, Callable[[dict[str, Any]], None]] = {
    "chunk_size-0": _set("chunk_size", 0),
    "size-negative": _set("size", -1),
    "object_key-empty": _set("object_key", ""),
    "object_key-traversal": _set("object_key", "../../../../etc/passwd"),
    "object_key-outside-objects": _set("object_key", PREFIX + "marker"),
    "name-lone-surrogate": _set("name", "x\ud800"),
    "name-c1-control": _set("name", "x\x85y"),
    "name-del": _set("name", "x\x7fy"),
    "name-part-file-too-long": _set("name", "n" * 255),
    "uploaded_at-huge": _set("uploaded_at", 1e300),
    "uploaded_at-negative": _set("uploaded_at", -1.0),
    "mode-out-of-range": _set("mode", 0o1000000),
    "sha256-not-hex": _set("sha256", "z" * 64),
    "format-unknown": _set("format", "v9"),
}


@pytest.mark.parametrize("attack", list(HOSTILE))
def test_hostile_manifest_field_is_rejected_and_other_names_still_install(
    site: AnySite, attack: str
) -> None:
    site.upload(make_file(site.root / "victim.bin", b"genuine\n"))
    body = site.manifest_body(1)
    HOSTILE[attack](body)
    hostile = site.append_sealed(body)
    v3, sha3 = site.upload(make_file(site.root / "other.bin", b"another name\n"))

    proc = site.once()
    log = proc.stderr.decode()
    assert "internal error" not in log and "Traceback" not in log, log
    assert f"ignoring log entry {hostile}: " in log, log
    assert proc.returncode == 0, log
    # The next run neither crashes nor says it again: rejected once, logged once.
    again = site.once()
    assert again.returncode == 0, again.stderr
    assert b"ignoring log entry" not in again.stderr and b"Traceback" not in again.stderr
    assert sha256_file(site.out / "other.bin") == sha3
    assert sorted(p.name for p in site.out.iterdir()) == ["other.bin", "victim.bin"]

    listing = site.cli("list", "-c", str(site.upload_conf))
    assert listing.returncode == 0, listing.stderr
    rows = site.cli("list", "-c", str(site.upload_conf), "--json")
    assert [row["version"] for row in json.loads(rows.stdout)] == [v3, "1"]


def _upload_with_mode(site: AnySite, mode: int) -> int:
    """A genuine upload whose manifest is then re-sealed with ``mode`` (setuid and all)."""
    site.upload(make_file(site.root / "tool", b"#!/bin/sh\necho hi\n", 0o755))
    body = site.manifest_body(1)
    body["mode"] = mode
    return site.append_sealed(body)


def test_setuid_bit_from_a_manifest_is_not_installed(site: AnySite) -> None:
    seq = _upload_with_mode(site, 0o6755)
    proc = site.once()
    assert proc.returncode == 0, proc.stderr
    assert [d["version"] for d in installs(proc.stderr.decode())] == [str(seq)]
    assert stat.S_IMODE((site.out / "tool").stat().st_mode) == 0o755


def test_setuid_bit_is_installed_when_the_daemon_config_allows_it(site: AnySite) -> None:
    site.update_daemon_conf(ModeMask=0o7777)
    _upload_with_mode(site, 0o4755)
    proc = site.once()
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE((site.out / "tool").stat().st_mode) == 0o4755


@pytest.mark.parametrize(
    ("name", "owner"),
    [("*", "app.bin"), ("[a]pp.bin", "app.bin"), ("app.bin", "app.bin.v9")],
)
def test_name_with_glob_characters_spares_other_names_resume_files(
    site: AnySite, name: str, owner: str
) -> None:
    """A crashed download of ``owner`` left its part file; installing ``name`` must not take
    it for one of its own."""
    site.out.mkdir(exist_ok=True)
    leftover = site.out / f".{owner}.v7{PART_SUFFIX}"
    leftover.write_bytes(os.urandom(1000))
    site.upload(make_file(site.root / "payload", b"x\n"), "--name", name)
    proc = site.once()
    assert proc.returncode == 0, proc.stderr
    assert (site.out / name).read_bytes() == b"x\n"
    assert leftover.exists(), f"installing {name!r} deleted {owner}'s resume file"
