"""`make release` and its version check, and `make changelog-lint`, as a maintainer runs them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / "scripts" / "release_check.py"
PY = REPO / ".venv" / "bin" / "python"
VERSION = yaml.safe_load((REPO / "galaxy.yml").read_text())["version"]


def _make(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(cwd), *args],
        capture_output=True, text=True, timeout=600, check=False,
    )


def test_make_release_builds_the_three_artifacts(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    done = _make("release", f"DIST={dist}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in dist.iterdir()) == sorted(
        [f"distsync-core-{VERSION}.tar.gz", f"distsync-{VERSION}-py3-none-any.whl",
         f"distsync-{VERSION}.tar.gz"]
    )
    assert f"release {VERSION}: built" in done.stdout


def _release_tree(tmp_path: Path) -> Path:
    """The files the version check reads, copied so they can be made to disagree."""
    root = tmp_path / "root"
    for name in ("galaxy.yml", "python/distsync/__init__.py", "python/pyproject.toml",
                 "changelogs/changelog.yaml"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, root / name)
    return root


def _check(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, CHECK, "--root", root, *args], capture_output=True, text=True,
                          timeout=60, check=False)


def test_the_checkout_agrees_with_itself(tmp_path: Path) -> None:
    done = _check(_release_tree(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"release {VERSION}: versions agree\n"


@pytest.mark.parametrize(
    ("path", "old", "new", "says"),
    [
        ("galaxy.yml", f"version: {VERSION}", "version: 9.9.9",
         f"galaxy.yml says version 9.9.9, distsync.__version__ says {VERSION}"),
        ("python/distsync/__init__.py", f'__version__ = "{VERSION}"', '__version__ = "9.9.9"',
         f"galaxy.yml says version {VERSION}, distsync.__version__ says 9.9.9"),
        ("python/pyproject.toml", 'version = {attr = "distsync.__version__"}',
         'version = {attr = "distsync.VERSION"}', "takes its version from distsync.VERSION"),
        ("changelogs/changelog.yaml", f"  {VERSION}:", "  0.0.1:",
         f"changelogs/changelog.yaml has no release {VERSION}"),
    ],
)
def test_a_disagreement_stops_the_release_with_one_line(
    tmp_path: Path, path: str, old: str, new: str, says: str
) -> None:
    root = _release_tree(tmp_path)
    text = (root / path).read_text()
    assert old in text
    (root / path).write_text(text.replace(old, new))
    done = _check(root)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and says in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_unexpected_files_in_dist_fail(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    for name in (f"distsync-core-{VERSION}.tar.gz", f"distsync-{VERSION}-py3-none-any.whl",
                 f"distsync-{VERSION}.tar.gz", "distsync-0.0.9-py3-none-any.whl"):
        (dist / name).write_bytes(b"")
    done = _check(_release_tree(tmp_path), "--dist", str(dist))
    assert done.returncode == 1 and "distsync-0.0.9-py3-none-any.whl" in done.stderr


# -- the changelog -------------------------------------------------------------------------


def _changelog_tree(tmp_path: Path) -> Path:
    root = tmp_path / "collection"
    shutil.copytree(REPO / "changelogs", root / "changelogs",
                    ignore=shutil.ignore_patterns(".plugin-cache.yaml"))
    for name in ("galaxy.yml", "CHANGELOG.md", "Makefile"):
        shutil.copy(REPO / name, root / name)
    (root / ".venv").symlink_to(REPO / ".venv")
    return root


def _changelog_lint(root: Path) -> subprocess.CompletedProcess[str]:
    # -o: the venv (this checkout's, linked) is taken as built; make runs only the lint.
    return _make("-o", ".venv/.installed-stamp", "changelog-lint", cwd=root)


def test_changelog_lint_accepts_this_checkout(tmp_path: Path) -> None:
    done = _changelog_lint(_changelog_tree(tmp_path))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.mark.parametrize(
    ("fragment", "text"),
    [
        ("21-bad-section.yml", "features:\n  - something new.\n"),
        ("21-not-a-list.yml", "minor_changes: something new.\n"),
        ("21-not-yaml.yml", "minor_changes:\n  - [unclosed\n"),
    ],
)
def test_changelog_lint_rejects_a_bad_fragment(tmp_path: Path, fragment: str, text: str) -> None:
    root = _changelog_tree(tmp_path)
    (root / "changelogs" / "fragments" / fragment).write_text(text)
    done = _changelog_lint(root)
    assert done.returncode != 0
    assert fragment in done.stdout + done.stderr


def test_changelog_lint_accepts_every_standard_section(tmp_path: Path) -> None:
    root = _changelog_tree(tmp_path)
    sections = ("major_changes", "minor_changes", "breaking_changes", "deprecated_features",
                "removed_features", "security_fixes", "bugfixes", "known_issues", "trivial")
    for index, section in enumerate(sections):
        path = root / "changelogs" / "fragments" / f"{100 + index}-{section}.yml"
        path.write_text(f"{section}:\n  - distsync daemon - an entry in {section}.\n")
    done = _changelog_lint(root)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_changelog_lint_notices_a_stale_changelog_md(tmp_path: Path) -> None:
    root = _changelog_tree(tmp_path)
    changelog = root / "CHANGELOG.md"
    changelog.write_text(changelog.read_text() + "\n* an entry written by hand\n")
    done = _changelog_lint(root)
    assert done.returncode != 0
    assert "CHANGELOG.md is not what changelogs/changelog.yaml generates" in done.stderr
