"""`make serve`: ComfyUI's own main.py on http://127.0.0.1:8188 with this pack loaded. Ctrl-C stops it.

The base directory is ``<repo>/.serve`` (git-ignored), prepared like the tests' one:
``custom_nodes/comfyui-perfusion`` links to this checkout; ``models/checkpoints`` gets the small
random-weight fixture unless the ComfyUI being run (``$COMFYUI_PATH``, else ``.comfyui``) already has
checkpoints of its own, in which case its ``models/`` folders are used through an extra model paths
file. ``$PERFUSION_CHECKPOINT`` is linked in too, the demo's concepts go to ``models/perfusion`` and
the bundled sample images to ``input/``. Arguments after the script's own go to main.py unchanged,
e.g. ``python -m scripts.serve --port 8190 -- --preview-method auto``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from harness.basedir import link_into, prepare_base_dir
from harness.paths import comfyui_path

REPO = Path(__file__).resolve().parents[1]

BASE = REPO / ".serve"
MODEL_SUFFIXES = {".safetensors", ".ckpt", ".pt", ".pth", ".sft"}


def own_model_folders(comfy_root: Path) -> list[Path]:
    """The ComfyUI's models/* folders when it has at least one checkpoint of its own, else []."""
    models = comfy_root / "models"
    ckpts = models / "checkpoints"
    has_checkpoint = ckpts.is_dir() and any(p.suffix in MODEL_SUFFIXES for p in ckpts.rglob("*"))
    return sorted(p for p in models.iterdir() if p.is_dir()) if has_checkpoint else []


def write_extra_paths(folders: list[Path], dest: Path) -> Path:
    """An extra_model_paths.yaml that adds each folder under its own name (checkpoints, loras, ...)."""
    lines = ["user_comfyui:"] + [
        f"    {f.name}: {json.dumps(f.as_posix())}" for f in folders
    ]  # JSON str = YAML
    dest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dest


def accelerator_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return torch.cuda.is_available() or bool(mps and mps.is_available())


def prepare(comfy_root: Path) -> list[str]:
    """Builds .serve/ and returns the extra main.py arguments it needs."""
    folders = own_model_folders(comfy_root)
    checkpoints: list = [] if folders else ["tiny"]
    if os.environ.get("PERFUSION_CHECKPOINT"):
        checkpoints.append(Path(os.environ["PERFUSION_CHECKPOINT"]).expanduser())
    layout = prepare_base_dir(BASE, checkpoints=checkpoints, load_pack=True)
    for concept in sorted((REPO / "output" / "concepts").glob("*.safetensors")):
        link_into(layout.perfusion, concept)
    for image in sorted((REPO / "assets" / "demo_images").glob("*.png")):
        link_into(layout.input, image)
    extra = []
    if folders:
        extra += [
            "--extra-model-paths-config",
            str(write_extra_paths(folders, BASE / "extra_model_paths.yaml")),
        ]
        print(f"using the models of {comfy_root / 'models'}")
    else:
        print(
            "models/checkpoints: the random-weight test fixture (images are abstract), "
            + ", ".join(layout.checkpoint_names)
        )
    return extra


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listen", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8188)
    args, passthrough = ap.parse_known_args(argv)
    passthrough = [a for a in passthrough if a != "--"]
    try:
        comfy_root = comfyui_path()
        extra = prepare(comfy_root)
    except Exception as e:
        print(f"serve failed: {e}", file=sys.stderr)
        return 1
    if not accelerator_available() and "--cpu" not in passthrough:
        extra.append("--cpu")
    cmd = [
        sys.executable,
        str(comfy_root / "main.py"),
        "--listen",
        args.listen,
        "--port",
        str(args.port),
        "--base-directory",
        str(BASE),
        *extra,
        *passthrough,
    ]
    print(f"ComfyUI at http://{args.listen}:{args.port} (base dir {BASE}); Ctrl-C stops it", flush=True)
    proc = subprocess.Popen(cmd, cwd=comfy_root)
    try:
        return proc.wait()
    except KeyboardInterrupt:  # the child got the same SIGINT and shuts down itself
        try:
            return proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            return 130


if __name__ == "__main__":
    raise SystemExit(main())
