"""Build a wheelhouse for the daemon role's offline installs, or check one against a host.

    wheelhouse.py build OUT --source DIR --constraints FILE --python 3.11 [--python 3.13 ...]
                        [--extra torrent] [--glibc 2.34] [--arch x86_64]
    wheelhouse.py check WHEELHOUSE --host JSON (--require REQ | --source DIR [--extra E])

``build`` (what ``make wheelhouse`` runs, on the controller) puts into OUT the engine's wheel,
built once from DIR (pure Python), and, for each target Python, the wheels of every
dependency and of setuptools (so ``source`` installs build offline too), all at the versions
the constraints file pins: pure and abi3 wheels are fetched once and serve every version,
per-version wheels (cffi, libtorrent) once per version. It fails if pip picked anything the
constraints do not pin, then checks the result for every target with the same rules as
``check``.

``check`` (run by the role on the controller, before anything changes on a host) answers
whether a host's Python finds in WHEELHOUSE a wheel of every package it needs, and prints
one line naming the first one missing otherwise (exit 1). JSON is what the host's own
interpreter reports (the role's ``_distsync_daemon_python_probe``), e.g.
``{"implementation": "cpython", "python": [3, 13], "abiflags": "", "libc": ["glibc", "2.41"],
"machine": "x86_64"}``.
The rules are those of pip's: PEP 425 tags from ``packaging.tags``, manylinux per PEP 600,
markers and specifiers from ``packaging`` (ansible-core depends on it, so every controller
has it). Only the decision is made here; pip on the host still does the install.
"""

from __future__ import annotations

import argparse
import dataclasses
import email.parser
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging import tags
from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import Tag
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

# The oldest glibc a manylinux tag names (PEP 600: manylinux_2_5 is manylinux1).
OLDEST_GLIBC_MINOR = 5
LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
ENGINE = "distsync"


class WheelhouseError(Exception):
    """A one-line reason for the user."""


# -- targets: a host's Python, as tags and marker values ------------------------------------


@dataclass(frozen=True)
class Target:
    python: tuple[int, int]
    arch: str
    glibc: tuple[int, int] | None = None  # None: not a glibc system (musl, ...)
    implementation: str = "cpython"
    abiflags: str = ""
    interpreter_path: str = ""

    @classmethod
    def from_probe(cls, text: str, interpreter_path: str = "") -> Target:
        try:
            data = json.loads(text)
            major, minor = (int(part) for part in data["python"])
            libc_name, libc_version = data["libc"]
            glibc = None
            if libc_name == "glibc":
                glibc_major, glibc_minor = (int(p) for p in libc_version.split(".")[:2])
                glibc = (glibc_major, glibc_minor)
            return cls(
                python=(major, minor),
                arch=str(data["machine"]),
                glibc=glibc,
                implementation=str(data["implementation"]),
                abiflags=str(data.get("abiflags", "")),
                interpreter_path=interpreter_path,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise WheelhouseError(
                f"cannot read the host's Python description {text!r}: {exc}"
            ) from None

    def describe(self) -> str:
        name = "CPython" if self.implementation == "cpython" else self.implementation
        libc = f"glibc {self.glibc[0]}.{self.glibc[1]}" if self.glibc else "no glibc"
        where = f" ({self.interpreter_path})" if self.interpreter_path else ""
        return f"{name} {self.python[0]}.{self.python[1]}{where} on {libc}, {self.arch}"

    def platforms(self) -> list[str]:
        """Platform tags this host accepts, most specific first (as pip orders them)."""
        found = []
        if self.glibc and self.glibc[0] == 2:
            for minor in range(self.glibc[1], OLDEST_GLIBC_MINOR - 1, -1):
                found.append(f"manylinux_2_{minor}_{self.arch}")
                if minor in LEGACY_MANYLINUX:
                    found.append(f"{LEGACY_MANYLINUX[minor]}_{self.arch}")
        found.append(f"linux_{self.arch}")
        return found

    def tags(self) -> list[Tag]:
        platforms = self.platforms()
        nodot = f"{self.python[0]}{self.python[1]}"
        if self.implementation == "cpython":
            abi = f"cp{nodot}{self.abiflags}"
            supported = list(tags.cpython_tags(self.python, abis=[abi], platforms=platforms))
        else:
            supported = []
        interpreter = f"cp{nodot}" if self.implementation == "cpython" else None
        supported += tags.compatible_tags(self.python, interpreter, platforms)
        return supported

    def environment(self) -> dict[str, str]:
        """PEP 508 marker values for this host (what ``packaging.markers`` evaluates)."""
        version = f"{self.python[0]}.{self.python[1]}"
        return {
            "implementation_name": self.implementation,
            "implementation_version": version,
            "os_name": "posix",
            "platform_machine": self.arch,
            "platform_python_implementation": (
                "CPython" if self.implementation == "cpython" else self.implementation
            ),
            "platform_system": "Linux",
            "python_version": version,
            "python_full_version": f"{version}.0",
            "sys_platform": "linux",
        }


# -- the wheelhouse: which wheels, their tags and requirements -----------------------------


@dataclass
class Wheel:
    path: Path
    name: str
    version: Version
    tags: frozenset[Tag]
    _requires: list[str] | None = field(default=None, repr=False)

    @classmethod
    def from_path(cls, path: Path) -> Wheel:
        try:
            name, version, _build, tags = parse_wheel_filename(path.name)
        except InvalidWheelFilename as exc:
            raise WheelhouseError(f"{path}: not a wheel file name ({exc})") from None
        return cls(path, name, version, frozenset(tags))

    def requires(self) -> list[str]:
        """The wheel's Requires-Dist lines (read from its METADATA once)."""
        if self._requires is None:
            try:
                with zipfile.ZipFile(self.path) as archive:
                    metadata = next(
                        n
                        for n in archive.namelist()
                        if n.endswith(".dist-info/METADATA") and n.count("/") == 1
                    )
                    text = archive.read(metadata).decode("utf-8")
            except (OSError, zipfile.BadZipFile, StopIteration, UnicodeDecodeError) as exc:
                raise WheelhouseError(f"{self.path}: unreadable wheel ({exc!r})") from None
            message = email.parser.Parser().parsestr(text, headersonly=True)
            self._requires = message.get_all("Requires-Dist") or []
        return self._requires


def read_wheelhouse(directory: Path) -> dict[str, list[Wheel]]:
    if not directory.is_dir():
        raise WheelhouseError(f"{directory}: no such wheelhouse directory")
    wheels: dict[str, list[Wheel]] = {}
    for path in sorted(directory.glob("*.whl")):
        wheel = Wheel.from_path(path)
        wheels.setdefault(wheel.name, []).append(wheel)
    return wheels


@dataclass(frozen=True)
class Missing:
    requirement: str
    needed_by: str
    available: tuple[str, ...]
    # Why none fits: "absent" (no wheel of it at all), "glibc" (only for a newer glibc),
    # "python" (only for other Python versions or ABIs).
    reason: str

    def message(self, wheelhouse: Path, target: Target) -> str:
        version = f"{target.python[0]}.{target.python[1]}"
        if self.reason == "absent":
            fix = "rebuild it with make wheelhouse (TORRENT=1 adds libtorrent)"
        elif self.reason == "glibc" and target.glibc:
            glibc = f"{target.glibc[0]}.{target.glibc[1]}"
            fix = f"rebuild it for this glibc, make wheelhouse GLIBC={glibc}"
        else:
            fix = f'rebuild it for this Python too, make wheelhouse PYTHONS="... {version}"'
        have = f" (it has {', '.join(self.available)})" if self.available else ""
        return (
            f"{wheelhouse} has no wheel of {self.requirement} (needed by {self.needed_by}) for "
            f"{target.describe()}{have}: {fix}"
        )


def find_missing(
    wheels: dict[str, list[Wheel]], roots: Sequence[tuple[str, str]], target: Target
) -> Missing | None:
    """The first requirement (breadth first from ``roots``) with no usable wheel, or None.

    ``roots`` are (requirement, who needs it). Like pip, each project gets its newest wheel
    that satisfies the requirement and that the target's tags accept; the wheelhouse is built
    from one set of pins, so there is normally exactly one candidate and no backtracking.
    """
    accepted = set(target.tags())
    environment = target.environment()
    chosen: dict[str, Wheel] = {}
    extras_done: dict[str, set[str]] = {}
    queue = list(roots)
    while queue:
        text, needed_by = queue.pop(0)
        try:
            requirement = Requirement(text)
        except InvalidRequirement as exc:
            raise WheelhouseError(
                f"{needed_by} requires {text!r}, which is not valid: {str(exc).splitlines()[0]}"
            ) from None
        name = canonicalize_name(requirement.name)
        if requirement.marker is not None and not requirement.marker.evaluate(
            dict(environment, extra="")
        ):
            continue
        candidates = [
            wheel
            for wheel in wheels.get(name, [])
            if requirement.specifier.contains(wheel.version, prereleases=True)
            and accepted & wheel.tags
        ]
        if name in chosen:
            if chosen[name] not in candidates:
                return Missing(str(requirement), needed_by, (chosen[name].path.name,), "python")
        elif not candidates:
            return _why_missing(str(requirement), needed_by, wheels.get(name, []), target)
        else:
            chosen[name] = max(candidates, key=lambda w: w.version)
        wheel = chosen[name]
        new_extras = set(requirement.extras) - extras_done.get(name, set())
        first_visit = name not in extras_done
        extras_done.setdefault(name, set()).update(requirement.extras)
        if not first_visit and not new_extras:
            continue
        for line in wheel.requires():
            try:
                dependency = Requirement(line)
            except InvalidRequirement:
                raise WheelhouseError(
                    f"{wheel.path.name} requires {line!r}, which is not valid"
                ) from None
            wanted = ["", *sorted(extras_done[name])]
            if dependency.marker is None or any(
                dependency.marker.evaluate(dict(environment, extra=extra)) for extra in wanted
            ):
                # Strip the marker: it was decided here, with this wheel's extras.
                dependency.marker = None
                queue.append((str(dependency), f"{wheel.name} {wheel.version}"))
    return None


def _why_missing(requirement: str, needed_by: str, present: list[Wheel], target: Target) -> Missing:
    available = tuple(wheel.path.name for wheel in present)
    if not present:
        return Missing(requirement, needed_by, available, "absent")
    any_glibc = set(dataclasses.replace(target, glibc=(2, 99)).tags())
    if target.glibc and any(any_glibc & wheel.tags for wheel in present):
        return Missing(requirement, needed_by, available, "glibc")
    return Missing(requirement, needed_by, available, "python")


def source_requirements(source: Path, extras: Iterable[str]) -> list[tuple[str, str]]:
    """What installing the engine from its source needs: build backend and dependencies."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11 on the controller
        try:
            import tomli as tomllib  # type: ignore[no-redef,import-not-found,unused-ignore]
        except ModuleNotFoundError:
            raise WheelhouseError(
                "reading pyproject.toml needs Python 3.11+ or tomli on the controller"
            ) from None
    path = source / "pyproject.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WheelhouseError(f"{path}: {exc}") from None
    project = data.get("project", {})
    who = f"{project.get('name', ENGINE)} (source)"
    roots = [(req, f"{who} build") for req in data.get("build-system", {}).get("requires", [])]
    roots += [(req, who) for req in project.get("dependencies", [])]
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise WheelhouseError(f"{path}: no optional dependencies named {extra!r}")
        roots += [(req, f"{who}[{extra}]") for req in optional[extra]]
    return roots


# -- build -----------------------------------------------------------------------------------


def read_pins(constraints: Path) -> dict[str, str]:
    """name -> version for every ``name==version`` line of a pip requirements/constraints file."""
    pins: dict[str, str] = {}
    for raw in constraints.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        exact = [s for s in requirement.specifier if s.operator == "=="]
        if exact:
            pins[canonicalize_name(requirement.name)] = exact[0].version
    return pins


def unpinned(wheels: dict[str, list[Wheel]], pins: dict[str, str]) -> list[str]:
    """Wheels (other than the engine) whose version the constraints do not pin."""
    found = []
    for name, versions in sorted(wheels.items()):
        if name == ENGINE:
            continue
        for wheel in versions:
            if name not in pins or Version(pins[name]) != wheel.version:
                found.append(wheel.path.name)
    return found


def parse_version(text: str) -> tuple[int, int]:
    try:
        major, minor = (int(part) for part in text.split("."))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not MAJOR.MINOR") from None
    return major, minor


def _pip(args: Sequence[str | os.PathLike[str]]) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet", *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if ln.startswith("ERROR")]
        reason = lines[0] if lines else (done.stderr.strip().splitlines() or ["?"])[-1]
        raise WheelhouseError(f"pip {args[0]} failed: {reason}")


def build(args: argparse.Namespace) -> None:
    pins = read_pins(args.constraints)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and any(p.suffix != ".whl" for p in out.iterdir()):
        raise WheelhouseError(f"{out} holds more than wheels; give an empty or new directory")
    with tempfile.TemporaryDirectory(prefix=".wheelhouse.", dir=out.parent) as scratch:
        stage = Path(scratch) / "wheels"
        stage.mkdir()
        # The engine once, from a clean copy of its source (an in-tree build leaves build/
        # and *.egg-info behind). Pure Python: one wheel for every target.
        source = Path(scratch) / "source"
        shutil.copytree(
            args.source,
            source,
            ignore=shutil.ignore_patterns(
                "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".*_cache"
            ),
        )
        # With setuptools at hand (the pinned one in make's venv), build with it: no index.
        isolation = ["--no-build-isolation"] if _has_setuptools() else []
        _pip(["wheel", "--no-deps", *isolation, "-w", stage, source])
        (engine,) = stage.glob(f"{ENGINE}-*.whl")
        extras = f"[{','.join(args.extra)}]" if args.extra else ""
        targets = [Target(python=v, arch=args.arch, glibc=args.glibc) for v in args.python]
        for target in targets:
            nodot = f"{target.python[0]}{target.python[1]}"
            platforms = [arg for p in target.platforms() for arg in ("--platform", p)]
            _pip(
                [
                    "download",
                    "--dest",
                    stage,
                    "--only-binary=:all:",
                    "--python-version",
                    nodot,
                    "--implementation",
                    "cp",
                    # abi3 and none come with it, as pip adds them to any CPython ABI.
                    "--abi",
                    f"cp{nodot}",
                    *platforms,
                    "--constraint",
                    args.constraints,
                    f"{engine}{extras}",
                    # The build backend, so install_source=source builds offline on the host.
                    "setuptools",
                ]
            )
        wheels = read_wheelhouse(stage)
        loose = unpinned(wheels, pins)
        if loose:
            raise WheelhouseError(
                f"{args.constraints} does not pin {', '.join(loose)}: pin it there first, so the "
                "wheelhouse holds only tested versions"
            )
        for target in targets:
            missing = find_missing(
                wheels,
                [(f"{ENGINE}{extras}", "the wheelhouse"), ("setuptools", "the wheelhouse")],
                target,
            )
            if missing:
                raise WheelhouseError(missing.message(out, target))
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    print(f"{out}: {len(list(out.glob('*.whl')))} wheels for Python "
          + ", ".join(f"{a}.{b}" for a, b in args.python))


def _has_setuptools() -> bool:
    import importlib.util

    return importlib.util.find_spec("setuptools") is not None


# -- check -----------------------------------------------------------------------------------


def check(args: argparse.Namespace) -> None:
    target = Target.from_probe(args.host, args.interpreter)
    wheels = read_wheelhouse(args.wheelhouse)
    if args.source:
        roots = source_requirements(args.source, args.extra)
    else:
        roots = [(args.require, "the role")]
    missing = find_missing(wheels, roots, target)
    if missing:
        raise WheelhouseError(missing.message(args.wheelhouse, target))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    b = commands.add_parser("build", help="build a wheelhouse for one or more Python versions")
    b.add_argument("out", type=Path)
    b.add_argument("--source", type=Path, required=True, help="the engine's source (python/)")
    b.add_argument("--constraints", type=Path, required=True, help="pins: requirements/test.txt")
    b.add_argument("--python", type=parse_version, action="append", required=True)
    b.add_argument("--extra", action="append", default=[], help="an engine extra: torrent")
    b.add_argument("--glibc", type=parse_version, default=(2, 34), help="the fleet's oldest glibc")
    b.add_argument("--arch", default="x86_64")
    c = commands.add_parser("check", help="does the wheelhouse serve this host's Python?")
    c.add_argument("wheelhouse", type=Path)
    c.add_argument("--host", required=True, help="what the role's probe printed on the host")
    c.add_argument("--interpreter", default="", help="the host's interpreter path, for messages")
    what = c.add_mutually_exclusive_group(required=True)
    what.add_argument("--require", help="what pip installs, e.g. 'distsync[torrent]==0.1.0'")
    what.add_argument("--source", type=Path, help="the engine's source, for source installs")
    c.add_argument("--extra", action="append", default=[])
    args = parser.parse_args(argv)
    try:
        build(args) if args.command == "build" else check(args)
    except WheelhouseError as exc:
        print(f"wheelhouse: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
