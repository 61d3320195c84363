"""Builds a cached file in a child process: building imports ``comfy``, which must not happen in a
process that later hosts ComfyUI with its own argument parsing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from harness.paths import comfyui_path, repo_root


def build_in_subprocess(module: str, out: Path, *args: str, what: str, timeout: int = 600) -> Path:
    """Runs ``python -m <module> <out> <args>`` from the repository root with the host selected; `out`,
    or an error naming `what` with the child's last lines."""
    env = dict(os.environ, COMFYUI_PATH=str(comfyui_path()))  # `-m` from the root imports the repository
    proc = subprocess.run(
        [sys.executable, "-m", module, str(out), *args],
        cwd=repo_root(),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0 or not out.is_file():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-40:])
        raise RuntimeError(f"building {what} failed (exit {proc.returncode}):\n{tail}")
    return out
