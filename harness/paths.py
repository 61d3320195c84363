"""Locations shared by the test suite, the demo script and the benchmarks."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ComfyUINotFoundError", "cache_dir", "comfyui_path", "host_description", "repo_root"]


class ComfyUINotFoundError(RuntimeError):
    """No usable ComfyUI installation was found."""


def repo_root() -> Path:
    """The root of the comfyui-perfusion checkout (the folder holding ``harness/``)."""
    return Path(__file__).resolve().parent.parent


def comfyui_path() -> Path:
    """The ComfyUI installation to run against.

    ``$COMFYUI_PATH`` wins when it is set and holds a ``main.py``; otherwise the copy that
    ``make setup`` installs in ``<repo>/.comfyui``.
    """
    env = os.environ.get("COMFYUI_PATH", "").strip()
    if env:
        p = Path(env).expanduser().resolve()
        if (p / "main.py").is_file():
            return p
    local = repo_root() / ".comfyui"
    if (local / "main.py").is_file():
        return local
    tried = [f"$COMFYUI_PATH={env!r} (no main.py there)"] if env else ["$COMFYUI_PATH (not set)"]
    tried.append(f"{local} (no main.py there)")
    raise ComfyUINotFoundError(
        "Cannot find ComfyUI. Tried: " + "; ".join(tried) + ". Run `make setup` or set COMFYUI_PATH "
        "to a ComfyUI folder (the one holding main.py)."
    )


def host_description(root: Path | None = None) -> str:
    """What the host is: the note `scripts/setup_env.sh` left (release and where it came from), else
    the version the host reports."""
    root = root or comfyui_path()
    note = root / ".perfusion-host"
    if note.is_file():
        return note.read_text(encoding="utf-8").strip()
    version = root / "comfyui_version.py"
    if version.is_file():
        for line in version.read_text(encoding="utf-8").splitlines():
            if line.startswith("__version__"):
                return "ComfyUI " + line.split("=", 1)[1].strip().strip("\"'")
    return "ComfyUI (version unknown)"


def cache_dir() -> Path:
    """``<repo>/tests/.cache`` (git-ignored), created on first use."""
    d = repo_root() / "tests" / ".cache"
    d.mkdir(parents=True, exist_ok=True)
    return d


def use_cpu() -> bool:
    """Run the host with --cpu unless a GPU is there (PERFUSION_DEVICE=cpu|gpu overrides)."""
    choice = os.environ.get("PERFUSION_DEVICE", "").strip().lower()
    if choice in ("cpu", "gpu"):
        return choice == "cpu"
    import torch

    return not torch.cuda.is_available()
