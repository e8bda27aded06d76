"""Check that a release's pieces name one version (`make release` runs it before and after).

    release_check.py [--root DIR] [--dist DIR]

Before building: galaxy.yml's ``version``, ``distsync.__version__`` (python/distsync/
__init__.py, which python/pyproject.toml takes as its dynamic version) and a release entry in
changelogs/changelog.yaml must agree. With ``--dist``: the built collection tarball, wheel
and sdist there must carry that version too, and nothing else may be there. Prints one line
and exits 1 on the first disagreement.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import tomllib
import yaml

REPO = Path(__file__).resolve().parents[1]
VERSION_LINE = re.compile(r'^__version__ = "([^"]+)"$', re.MULTILINE)


class Disagreement(Exception):
    pass


def galaxy_version(root: Path) -> str:
    data = yaml.safe_load((root / "galaxy.yml").read_text())
    return str(data["version"])


def engine_version(root: Path) -> str:
    init = root / "python" / "distsync" / "__init__.py"
    match = VERSION_LINE.search(init.read_text())
    if not match:
        raise Disagreement(f"{init}: no __version__ = \"...\" line")
    pyproject = tomllib.loads((root / "python" / "pyproject.toml").read_text())
    project = pyproject["project"]
    if "version" in project.get("dynamic", []):
        attr = pyproject["tool"]["setuptools"]["dynamic"]["version"].get("attr")
        if attr != "distsync.__version__":
            raise Disagreement(
                f"python/pyproject.toml takes its version from {attr}, not distsync.__version__"
            )
    elif project.get("version") != match.group(1):
        raise Disagreement(
            f"python/pyproject.toml says version {project.get('version')}, "
            f"distsync.__version__ says {match.group(1)}"
        )
    return match.group(1)


def changelog_versions(root: Path) -> set[str]:
    data = yaml.safe_load((root / "changelogs" / "changelog.yaml").read_text())
    return {str(version) for version in (data.get("releases") or {})}


def expected_dist(version: str) -> set[str]:
    return {
        f"distsync-core-{version}.tar.gz",
        f"distsync-{version}-py3-none-any.whl",
        f"distsync-{version}.tar.gz",
    }


def check(root: Path, dist: Path | None) -> str:
    collection, engine = galaxy_version(root), engine_version(root)
    if collection != engine:
        raise Disagreement(
            f"galaxy.yml says version {collection}, distsync.__version__ says {engine}: "
            "make them equal"
        )
    if collection not in changelog_versions(root):
        raise Disagreement(
            f"changelogs/changelog.yaml has no release {collection}: run "
            f"antsibull-changelog release --version {collection}"
        )
    if dist is not None:
        found = {path.name for path in dist.iterdir()}
        if found != expected_dist(collection):
            raise Disagreement(
                f"{dist} holds {', '.join(sorted(found)) or 'nothing'}, expected "
                f"{', '.join(sorted(expected_dist(collection)))}"
            )
    return collection


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO)
    parser.add_argument("--dist", type=Path)
    args = parser.parse_args()
    try:
        version = check(args.root, args.dist)
    except (Disagreement, OSError, KeyError, yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        print(f"release: {exc}", file=sys.stderr)
        return 1
    print(f"release {version}: " + ("built" if args.dist else "versions agree"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
