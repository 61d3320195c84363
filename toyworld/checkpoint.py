"""The toy-world checkpoint ComfyUI loads: trained UNet + exact VAE + the fixture's random CLIP-L.

Only the trained weights are committed (``toyworld/weights/toyworld.safetensors``, in 8 bits:
:mod:`toyworld.storage`): the UNet, the attention of CLIP's last layer, and the zero layer norms that
switch the other layers' attention off (:data:`TEXT_SILENCED`). The rest of the text encoder is the
test fixture's deterministic random CLIP-L, which the world was trained against, and
the VAE is set by hand (:mod:`toyworld.vae`); both are regenerated here, so packing takes seconds. The packed ``.ckpt`` keeps the fixture's shared-storage CLIP (a few MB
instead of 246 MB as plain fp16) and is loaded by ComfyUI with ``weights_only=True``.

    python -m toyworld.checkpoint OUT.ckpt
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from harness.builder import build_in_subprocess, write_checkpoint
from harness.paths import cache_dir, repo_root

WEIGHTS = repo_root() / "toyworld" / "weights" / "toyworld.safetensors"
_UNET = "model.diffusion_model."
TEXT_ROOT = "cond_stage_model.transformer."
TEXT_LAYERS = TEXT_ROOT + "text_model.encoder.layers."
LAST = 11  # CLIP-L's last layer
# The trained part of the text encoder: the last layer's attention.
TEXT_TRAINED = (f"{TEXT_LAYERS}{LAST}.self_attn.", f"{TEXT_LAYERS}{LAST}.layer_norm1.")
# The frozen layers' attention is switched off (its layer norm set to zero, so it adds nothing): the
# fixture's random attention mixes every earlier word into each word almost uniformly, and its output
# dwarfs the word's own embedding, so a second object's words would carry the first object. Each
# word then enters the last layer as a function of itself and its position, as a pretrained
# encoder's words mostly are, and the trained attention alone decides what a word gathers.
TEXT_SILENCED = tuple(f"{TEXT_LAYERS}{i}.layer_norm1.{p}" for i in range(LAST) for p in ("weight", "bias"))
_VAE = "first_stage_model."


def _weights_tag() -> str:
    if not WEIGHTS.is_file():
        raise FileNotFoundError(
            f"{WEIGHTS} is missing: it is committed with the repository (run `make toyworld` to retrain it)"
        )
    return hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()[:10]


def toyworld_checkpoint_name() -> str:
    return f"toyworld-sd15-{_weights_tag()}.ckpt"


def toyworld_checkpoint(dest_dir: str | os.PathLike | None = None) -> Path:
    """Path of the packed checkpoint, packing it (in a subprocess: it imports ``comfy``) when missing.
    The name holds a hash of the committed weights, so retrained weights never reuse a stale file."""
    dest = Path(dest_dir) if dest_dir is not None else cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / toyworld_checkpoint_name()
    if out.is_file():
        return out
    return build_in_subprocess("toyworld.checkpoint", out, what="the toy-world checkpoint")


def build_state_dict() -> dict:
    """The packed state dict. Imports ``comfy``: only in a process that hosts no ComfyUI."""
    import torch
    from safetensors.torch import load_file

    from harness.fixture_checkpoint import FixtureSpec
    from harness.fixture_checkpoint import build_state_dict as fixture_state_dict
    from toyworld import storage, vae

    sd = fixture_state_dict(FixtureSpec("tiny"))
    trained = storage.unpack(load_file(str(WEIGHTS)))
    expected = {k for k in sd if k.startswith((_UNET, *TEXT_TRAINED))} | set(TEXT_SILENCED)
    if expected != set(trained):
        raise ValueError(
            f"{WEIGHTS} does not hold the tiny UNet layout, CLIP's last attention and the silenced layer norms"
        )
    sd.update(trained)
    for k, v in vae.state_dict().items():
        sd[_VAE + k] = v.to(torch.float16)
    return dict(sorted(sd.items()))


def main(argv: list[str] | None = None) -> int:
    (out,) = argv if argv is not None else sys.argv[1:]
    return write_checkpoint(Path(out), build_state_dict())


if __name__ == "__main__":
    raise SystemExit(main())
