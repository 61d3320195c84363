"""Gradient checkpointing for training: layers whose activations are recomputed in backward.

ComfyUI's UNet runs each block through `forward_timestep_embed`, which calls the block's layers one
by one and never the block's own `forward` (every release from Dec 2024 to 0.33). So the unit here is
the layer the host does call: each ResBlock, Downsample, Upsample and SpatialTransformer; one that
stacks several transformer blocks (SDXL: up to 10) is checkpointed block by block instead, so that a
recompute holds one block's activations, not ten. The wraps are object patches on the training
clone's layer forwards, so they compose with the patches inside a layer (the Perfusion edit on
to_k/to_v, the pre-2025 norm copies) and leave with the clone when it unloads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.utils.checkpoint


class Checkpointed:
    """A layer forward whose activations are recomputed in backward instead of kept."""

    def __init__(self, forward: Callable) -> None:
        self.forward = forward

    def __call__(self, *args, **kwargs):
        if not torch.is_grad_enabled():  # previews sample on the training clone: nothing to keep
            return self.forward(*args, **kwargs)
        # The host updates a dict argument (transformer_options: block_index...) after the call; the
        # recompute must see what this call saw.
        args = tuple(dict(a) if isinstance(a, dict) else a for a in args)
        kwargs = {k: dict(v) if isinstance(v, dict) else v for k, v in kwargs.items()}
        return torch.utils.checkpoint.checkpoint(self._run, *args, use_reentrant=False, **kwargs)

    def _run(self, *args, **kwargs):
        """The forward on copies of its tensor inputs: pre-2025 transformer blocks add to their input
        in place (`x += n`), which would change what the recompute starts from (and autograd refuses
        it). The copies are made inside the checkpoint, so backward keeps none of them."""
        args = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)
        kwargs = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        return self.forward(*args, **kwargs)


def _unet_layers(unet: torch.nn.Module) -> Iterator[str]:
    """Paths (below the UNet) of the layers to checkpoint: those of every input, middle and output
    block that have sub-modules; a SpatialTransformer of several transformer blocks as its blocks. A
    lone operation (the first input block's convolution) is left alone: it keeps only its input, as a
    checkpoint would."""
    blocks = [(f"input_blocks.{i}", b) for i, b in enumerate(getattr(unet, "input_blocks", ()))]
    if getattr(unet, "middle_block", None) is not None:
        blocks.append(("middle_block", unet.middle_block))
    blocks += [(f"output_blocks.{i}", b) for i, b in enumerate(getattr(unet, "output_blocks", ()))]
    for path, block in blocks:
        for name, layer in block.named_children():
            inner = getattr(layer, "transformer_blocks", None)
            if isinstance(inner, torch.nn.ModuleList) and len(inner) > 1:
                yield from (f"{path}.{name}.transformer_blocks.{k}" for k in range(len(inner)))
            elif next(layer.children(), None) is not None:
                yield f"{path}.{name}"


def checkpoint_unet(model) -> None:
    """Wraps the UNet layers of `model` (a training clone's ModelPatcher) in `Checkpointed`, on top
    of whatever forward the clone already gives them."""
    for path in _unet_layers(model.model.diffusion_model):
        key = f"diffusion_model.{path}.forward"
        model.add_object_patch(key, Checkpointed(model.get_model_object(key)))
