"""A random-weight CLIP vision checkpoint that ComfyUI's ``CLIPVisionLoader`` loads as CLIP ViT-L/14 (the
image tower IP-Adapter users keep in ``models/clip_vision``), for testing the mechanics of nodes that
take a CLIP_VISION: deterministic, cached, a few MB on disk (the strided views of
:mod:`harness.fixture_checkpoint`), ~300M parameters once loaded. Random weights embed images as noise
with structure: good for mechanics, meaningless for quality.

    python -m harness.clip_vision_fixture OUT.pt
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from harness.builder import build_in_subprocess
from harness.fixture_checkpoint import _meta_shapes, _serialise, _StridedInit, _write_atomic, import_comfy
from harness.paths import cache_dir, comfyui_path

VERSION = "v1"
CONFIG = "clip_vision_config_vitl.json"  # what the host picks for 24 layers, 1024 wide, 257 positions


def clip_vision_fixture_name() -> str:
    return f"fixture-clip-vision-vitl-{VERSION}.pt"


def clip_vision_fixture(dest_dir: str | os.PathLike | None = None) -> Path:
    """Path of the cached fixture, built in a subprocess (it imports ``comfy``) when missing."""
    dest = Path(dest_dir) if dest_dir is not None else cache_dir()
    out = dest / clip_vision_fixture_name()
    if out.is_file():
        return out
    return build_in_subprocess("harness.clip_vision_fixture", out, what="the CLIP vision fixture")


def build_state_dict() -> dict:
    """The host's CLIP vision ViT-L/14 state dict with random weights (tensors share storages)."""
    import_comfy(comfyui_path())
    import comfy.clip_model
    import comfy.ops
    import torch

    config = json.loads((comfyui_path() / "comfy" / CONFIG).read_text())
    shapes = _meta_shapes(
        lambda: comfy.clip_model.CLIPVisionModelProjection(
            config, torch.float32, "meta", comfy.ops.manual_cast
        )
    )
    init = _StridedInit(seed=0, dtype=torch.float16)
    sd = {}
    for key, shape in shapes.items():
        if key.endswith("bias"):
            sd[key] = torch.zeros(shape, dtype=torch.float16)
        elif len(shape) == 1 and "norm" in key:
            sd[key] = torch.ones(shape, dtype=torch.float16)
        else:
            init.plan(key, shape, 1.0 / math.sqrt(math.prod(shape[1:]) or shape[0]))
    sd.update(init.realise())
    return dict(sorted(sd.items()))


def main(argv: list[str] | None = None) -> int:
    (out,) = argv if argv is not None else sys.argv[1:]
    data = _serialise(build_state_dict())
    _write_atomic(Path(out), data)
    print(f"wrote {out}: {len(data) / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
