"""Imports every top-level module of the wheels installed in SITE, under this Python (3.12, as on the
lent GPU machine): ``scripts/device_check.sh prepare`` runs it with a local CPython 3.12.

A module that only fails for want of a package the machine already has (torch, numpy, ...: the list
in device_packages.txt beside this file) counts as importing. Standard library only.

    python3.12 scripts/device/import_check.py SITE
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

LISTED = Path(__file__).with_name("device_packages.txt")


def top_level_modules(site: Path) -> list[str]:
    """Top-level modules the installed wheels' RECORD files list (no scripts, no metadata)."""
    names = set()
    for info in site.glob("*.dist-info"):
        for line in (info / "RECORD").read_text(encoding="utf-8").splitlines():
            head = line.split(",", 1)[0].split("/", 1)[0]
            if line and not head.startswith(("..", "bin")) and not head.endswith(".dist-info"):
                names.add(head.split(".", 1)[0])
    return sorted(names)


def main() -> int:
    site = Path(sys.argv[1])
    sys.path.insert(0, str(site))  # the wheels under test, installed with --target (not a site dir)
    listed = LISTED.read_text(encoding="utf-8").splitlines()
    on_machine = {n.strip().lower().replace("_", "-") for n in listed if n.strip() and not n.startswith("#")}
    failed, leaning = [], set()
    modules = top_level_modules(site)
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as error:
            missing = (error.name or "").split(".", 1)[0]
            if missing.lower().replace("_", "-") in on_machine:
                leaning.add(missing)
            else:
                failed.append(f"{name}: {error}")
        except Exception as error:  # reported, as any failure to import
            failed.append(f"{name}: {type(error).__name__}: {error}")
    print(
        f"[kit] CPython {sys.version.split()[0]}: {len(modules) - len(failed)} of {len(modules)} modules "
        f"import (some reach modules only the machine has: {', '.join(sorted(leaning)) or 'none'})"
    )
    for line in failed:
        print(f"[kit] does not import: {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
