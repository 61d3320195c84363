"""Builds a cached file in a child process: building imports ``comfy``, which must not happen in a
process that later hosts ComfyUI with its own argument parsing."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.paths import comfyui_path, repo_root


def build_in_subprocess(module: str, out: Path, *args: str, what: str, timeout: int = 600) -> Path:
    """Runs ``python -m <module> <out> <args>`` with the repository and the host importable; `out`,
    or an error naming `what` with the child's last lines."""
    env = dict(os.environ, COMFYUI_PATH=str(comfyui_path()))
    env["PYTHONPATH"] = os.pathsep.join([str(repo_root()), *filter(None, [env.get("PYTHONPATH")])])
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


def serialise(sd: dict) -> bytes:
    import torch

    buf = io.BytesIO()  # a file object: the zip record prefix is the fixed "archive/"
    torch.save({"state_dict": sd}, buf)
    return buf.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_checkpoint(out: Path, sd: dict) -> int:
    """A builder's last step: `sd` serialised and written atomically to `out`; exit status 0."""
    data = serialise(sd)
    write_atomic(out, data)
    print(f"wrote {out}: {len(data) / 2**20:.1f} MiB")
    return 0
