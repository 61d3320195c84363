"""The toy-world checkpoint ComfyUI loads: trained UNet + exact VAE + the fixture's random CLIP-L.

Only the trained weights are committed (``toyworld/weights/toyworld.safetensors``, in 8 bits:
:mod:`toyworld.storage`): the UNet, and the attention of CLIP's last layer. The rest of the text
encoder is the test fixture's deterministic random CLIP-L, which the world was trained against, and
the VAE is set by hand (:mod:`toyworld.vae`); both are regenerated here, so packing takes seconds. The packed ``.ckpt`` keeps the fixture's shared-storage CLIP (a few MB
instead of 246 MB as plain fp16) and is loaded by ComfyUI with ``weights_only=True``.

    python -m toyworld.checkpoint OUT.ckpt [WEIGHTS]
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from harness.builder import build_in_subprocess
from harness.paths import cache_dir, repo_root

WEIGHTS = repo_root() / "toyworld" / "weights" / "toyworld.safetensors"
_UNET = "model.diffusion_model."
TEXT_ROOT = "cond_stage_model.transformer."
_LAYERS = TEXT_ROOT + "text_model.encoder.layers."
LAST = 11  # CLIP-L's last layer
LAST_LAYER = f"{_LAYERS}{LAST}."
_TEXT = (LAST_LAYER + "self_attn.", LAST_LAYER + "layer_norm1.")  # the trained part of the text encoder
# The frozen layers' attention is switched off (their first layer norm is zero, so attention adds one
# constant vector): the fixture's random attention mixes every earlier word into each word almost
# uniformly (a caption's words then differ from another's by 20-30 % of their norm wherever they are,
# even a comma after a noun), so a slot's word would carry every object named before it. Each word
# then reaches the last layer as a function of itself and its position, and the trained attention
# alone decides what a word gathers.
# The MLPs are switched off the same way (second layer norm zero), in all 12 layers: random MLPs
# entangle a word with its position, and a slot is told from another only by its position, which the
# UNet can then read as one direction shared by every word (token embedding + position embedding).
TEXT_SILENCED = tuple(
    f"{_LAYERS}{i}.{norm}.{p}"
    for i in range(LAST + 1)
    for norm in ("layer_norm1", "layer_norm2")
    if not (i == LAST and norm == "layer_norm1")
    for p in ("weight", "bias")
)
_VAE = "first_stage_model."


def _weights_tag(weights: Path | None = None) -> str:
    weights = weights or WEIGHTS
    if not weights.is_file():
        hint = "it is committed with the repository (run `make toyworld` to retrain it)"
        raise FileNotFoundError(f"{weights} is missing: " + (hint if weights == WEIGHTS else "no such file"))
    return hashlib.sha256(weights.read_bytes()).hexdigest()[:10]


def toyworld_checkpoint_name(weights: Path | None = None) -> str:
    return f"toyworld-sd15-{_weights_tag(weights)}.ckpt"


def toyworld_checkpoint(dest_dir: str | os.PathLike | None = None, weights: Path | None = None) -> Path:
    """Path of the packed checkpoint, packing it (in a subprocess: it imports ``comfy``) when missing.
    The name holds a hash of the weights, so retrained weights never reuse a stale file. ``weights``:
    None for the committed ones, or another build's (``toyworld.build --out``) to compare worlds."""
    dest = Path(dest_dir) if dest_dir is not None else cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / toyworld_checkpoint_name(weights)
    if out.is_file():
        return out
    return build_in_subprocess(
        "toyworld.checkpoint", out, str(weights or WEIGHTS), what="the toy-world checkpoint"
    )


def build_state_dict(weights: Path = WEIGHTS) -> dict:
    """The packed state dict. Imports ``comfy``: only in a process that hosts no ComfyUI."""
    import torch
    from safetensors.torch import load_file

    from harness.fixture_checkpoint import FixtureSpec
    from harness.fixture_checkpoint import build_state_dict as fixture_state_dict
    from toyworld import storage, vae

    sd = fixture_state_dict(FixtureSpec("tiny"))
    trained = storage.unpack(load_file(str(weights)))
    expected = {k for k in sd if k.startswith((_UNET, *_TEXT))} | set(TEXT_SILENCED)
    if expected != set(trained):
        raise ValueError(
            f"{weights} does not hold the tiny UNet layout, CLIP's last attention and the silenced layer norms"
        )
    sd.update(trained)
    for k, v in vae.state_dict().items():
        sd[_VAE + k] = v.to(torch.float16)
    return dict(sorted(sd.items()))


def main(argv: list[str] | None = None) -> int:
    from harness.fixture_checkpoint import _serialise, _write_atomic

    out, *weights = argv if argv is not None else sys.argv[1:]
    data = _serialise(build_state_dict(*(Path(w) for w in weights)))
    _write_atomic(Path(out), data)
    print(f"wrote {out}: {len(data) / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
