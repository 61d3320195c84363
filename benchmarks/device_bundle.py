"""The device kit's bundle: what a lent GPU machine needs beyond its own image, and whether it travels.

The machine (the library's device/KINDS.md) runs Python 3.12 with torch 2.11 and has no network; what
it lacks travels as wheels. A device call carries the working tree (tracked files and untracked ones
git does not ignore) plus the ignored paths named in ``carry``: 64 MiB in all. The bundle is ``.kit/``
(git-ignored, made by ``scripts/device_check.sh prepare``): ``wheels/`` and the host's release tarball.

What ComfyUI 0.33 needs at start-up and the machine lacks was measured by starting ``main.py`` with
each candidate module blocked: :data:`WHEELS` are the ones it cannot start without, plus the small
ones it would only warn about; :data:`LEFT_OUT` start-up goes on without (``av`` gets a stand-in,
``scripts/device/stubs/av``, and the frontend a one-page ``--front-end-root``).

    python -m benchmarks.device_bundle requirements [--pure]   # the pip lines device_check.sh downloads
    python -m benchmarks.device_bundle check [--carry .kit]    # wheels fit cp312 x86-64; the call fits
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

from harness.paths import repo_root

CALL_LIMIT_MIB = 64.0  # device/README.md: the working tree that travels, carried paths included
MARGIN_MIB = 4.0  # room for the tree to grow between preparing the bundle and the call
BUNDLE = ".kit"
BUNDLE_MIB = 13.3  # .kit as `scripts/device_check.sh prepare` made it (8.6 MiB wheels, 4.7 MiB host)
DEVICE_PACKAGES = Path(__file__).resolve().parents[1] / "scripts" / "device" / "device_packages.txt"
# The machine's Python (device/KINDS.md: 3.12.3, x86-64) and the manylinux levels pip is asked for.
PYTHON = (3, 12)
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux_2_12_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
)
MARKER_ENVIRONMENT = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "extra": "",
}


@dataclass(frozen=True)
class Wheel:
    """One package the machine lacks, pinned to the version the host is tested with here."""

    name: str
    version: str
    why: str
    pure: bool = False  # the py3-none-any build (pip would otherwise pick a larger binary one)

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


WHEELS: tuple[Wheel, ...] = (
    Wheel("SQLAlchemy", "2.1.9", "main.py -> app.assets: start-up fails without it"),
    Wheel("comfy-aimdo", "0.4.13", "main.py imports it: dynamic VRAM on NVIDIA"),
    Wheel(
        "comfy-kitchen",
        "0.2.31",
        "comfy/ldm/modules/attention.py imports it (not optional in this 0.33 tree); the pure build "
        "(0.2 MB, eager backend) instead of the 58 MB CUDA one",
        pure=True,
    ),
    Wheel("torchsde", "0.2.6", "comfy/k_diffusion/sampling.py: start-up fails without it"),
    Wheel("trampoline", "0.1.2", "torchsde's"),
    Wheel("pydantic", "2.14.4", "app.assets' routes: start-up fails without it"),
    Wheel("pydantic-core", "2.50.5", "pydantic's"),
    Wheel("typing-inspection", "0.4.5", "pydantic's"),
    Wheel("annotated-types", "0.8.0", "pydantic's"),
    Wheel("alembic", "1.20.1", "the database (without it start-up warns and runs without one)"),
    Wheel("Mako", "1.4.3", "alembic's"),
    Wheel("blake3", "1.0.11", "asset hashing (a warning without it)"),
    Wheel("simpleeval", "1.0.8", "comfy_extras/nodes_math.py"),
    Wheel("pydantic-settings", "2.16.3", "reading custom nodes' pyproject.toml (a warning per node without)"),
    Wheel("python-dotenv", "1.2.4", "pydantic-settings'"),
)

# Top-level modules ComfyUI 0.33 tries at start-up that the machine lacks and the bundle leaves out.
LEFT_OUT: dict[str, str] = {
    "comfyui_frontend_package": "22 MB; main.py gets --front-end-root, a one-page folder (no browser here)",
    "comfyui_workflow_templates": "the frontend's template browser",
    "comfyui_embedded_docs": "the frontend's node docs",
    "comfy_angle": "the frontend's WebGL on Windows",
    "OpenGL": "no node the kit runs",
    "kornia": "7.3 MB with kornia_rs; only comfy_extras nodes the kit does not use fail to import",
    "kornia_rs": "kornia's",
    "spandrel": "upscale-model nodes",
}
STAND_INS: dict[str, str] = {"av": "scripts/device/stubs/av: its 35 MB wheel (FFmpeg inside) does not fit"}


def device_packages(path: Path = DEVICE_PACKAGES) -> set[str]:
    """The machine's packages (canonical names)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return {canonicalize_name(line.strip()) for line in lines if line.strip() and not line.startswith("#")}


def machine_tags() -> set[Tag]:
    """Wheel tags the machine's CPython 3.12 on x86-64 Linux installs."""
    tags = set(cpython_tags(PYTHON, platforms=PLATFORMS))
    return tags | set(compatible_tags(PYTHON, "cp312", platforms=PLATFORMS))


def _metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(archive.read(name).decode("utf-8"))


def wheel_problems(folder: Path, available: set[str] | None = None) -> list[str]:
    """What would stop `folder`'s wheels installing and importing on the machine (empty when none):
    a wheel it cannot install, two versions of one package, a listed wheel missing, or a requirement
    neither the machine nor the bundle has."""
    available = device_packages() if available is None else available
    tags = machine_tags()
    problems, found = [], {}
    for wheel in sorted(folder.glob("*.whl")):
        name, version, _, wheel_tags = parse_wheel_filename(wheel.name)
        if not wheel_tags & tags:
            problems.append(
                f"{wheel.name}: built for {sorted(map(str, wheel_tags))}, not CPython 3.12 x86-64"
            )
        if name in found:
            problems.append(f"{wheel.name}: a second version of {name} ({found[name][0]}): pip refuses both")
        found[name] = (str(version), wheel)
    for wanted in WHEELS:
        key = canonicalize_name(wanted.name)
        if key not in found:
            problems.append(f"{folder}: no wheel of {wanted.requirement} ({wanted.why})")
        elif found[key][0] != wanted.version:
            problems.append(f"{found[key][1].name}: expected version {wanted.version}")
    for _, wheel in sorted(found.values()):
        for line in _metadata(wheel).get_all("Requires-Dist") or []:
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate(MARKER_ENVIRONMENT):
                continue
            needed = canonicalize_name(requirement.name)
            if needed not in found and needed not in available:
                problems.append(f"{wheel.name} needs {requirement}: not on the machine nor in the bundle")
    return problems


def _size(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() or p.is_symlink())


def tree_files(root: Path) -> list[Path]:
    """The files a call sends besides `carry`: tracked, and untracked that git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    paths = (root / name.decode() for name in listed if name)
    return [p for p in dict.fromkeys(paths) if p.is_file() or p.is_symlink()]


@dataclass
class CallSize:
    """What one device call would carry, in MiB."""

    tree_mib: float
    carried_mib: dict[str, float]
    limit_mib: float = CALL_LIMIT_MIB
    margin_mib: float = MARGIN_MIB

    @property
    def total_mib(self) -> float:
        return self.tree_mib + sum(self.carried_mib.values())

    @property
    def fits(self) -> bool:
        return self.total_mib <= self.limit_mib - self.margin_mib

    def describe(self) -> str:
        parts = [f"tree {self.tree_mib:.1f}"] + [f"{p} {m:.1f}" for p, m in self.carried_mib.items()]
        verdict = "fits" if self.fits else "does NOT fit"
        return (
            f"device call: {' + '.join(parts)} = {self.total_mib:.1f} MiB; limit {self.limit_mib:.0f} MiB "
            f"less a {self.margin_mib:.0f} MiB margin: {verdict}"
        )


def call_size(
    root: Path, carry: Sequence[str], limit_mib: float = CALL_LIMIT_MIB, margin_mib: float = MARGIN_MIB
) -> CallSize:
    """The size of a call from `root` carrying `carry` (paths relative to `root`)."""
    mib = 2**20
    carried = {}
    for item in carry:
        path = root / item
        if not path.exists():
            raise FileNotFoundError(f"carry: {path} does not exist (run scripts/device_check.sh prepare)")
        carried[item] = _size(path) / mib
    tree = sum(_size(p) for p in tree_files(root)) / mib
    return CallSize(tree, carried, limit_mib, margin_mib)


def requirements(pure: bool) -> Iterable[str]:
    return (w.requirement for w in WHEELS if w.pure == pure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.device_bundle", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("requirements", help="print the pinned wheels, one a line")
    listing.add_argument("--pure", action="store_true", help="only those downloaded as py3-none-any")
    check = sub.add_parser("check", help="check the bundle's wheels and the call's size")
    check.add_argument("--carry", nargs="*", default=[BUNDLE], help="paths the call carries (default .kit)")
    check.add_argument("--margin-mib", type=float, default=MARGIN_MIB)
    args = parser.parse_args(argv)
    if args.command == "requirements":
        print("\n".join(requirements(args.pure)))
        return 0
    root = repo_root()
    problems = wheel_problems(root / BUNDLE / "wheels") if BUNDLE in args.carry else []
    size = call_size(root, args.carry, margin_mib=args.margin_mib)
    for name, mib in size.carried_mib.items():
        print(f"  {name}: {mib:.2f} MiB")
    print(size.describe())
    for problem in problems:
        print(f"  problem: {problem}", file=sys.stderr)
    return 0 if size.fits and not problems else 1


if __name__ == "__main__":
    raise SystemExit(main())
