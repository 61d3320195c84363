"""Training clones of the host's model and CLIP that autograd can run through.

The host builds both for inference: in-place adds, weights loaded under inference mode, device
copies of the weights shared between clones. Each helper here undoes one of those for a run.
"""

from __future__ import annotations

import inspect
import uuid

import comfy.utils
import torch

from . import text_encoder
from .checkpointing import Checkpointed


class _OutOfPlaceLayer:
    """CLIP layer forward without `x +=`: ComfyUI's in-place adds break backward to the embedding."""

    def __init__(self, layer) -> None:
        self.layer = layer

    def __call__(self, x, mask=None, optimized_attention=None):
        layer = self.layer
        x = x + layer.self_attn(layer.layer_norm1(x), mask, optimized_attention)
        return x + layer.mlp(layer.layer_norm2(x))


def _grad_safe_operations(operations):
    """The host's layer classes with an Embedding whose weight does not require grad.

    Hosts from before 2025 (`SDClipModel.set_up_textual_embeddings`) put prompt embeddings into a
    new Embedding by writing its weight in place, which autograd refuses on a weight that requires
    grad. With this one the writes are recorded instead, so the gradient reaches the trained word.
    """

    class Embedding(operations.Embedding):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.weight.requires_grad_(False)

    return type("GradSafeOperations", (operations,), {"Embedding": Embedding})


def trainable_clip(clip, word: str, embeddings: dict[str, torch.Tensor], checkpointing: bool):
    """A CLIP clone that maps `word` to the trained embeddings (one per text encoder); with
    checkpointing its layers are recomputed in backward, so only one layer's weights are held for
    the gradient at a time."""
    patched = text_encoder.clip_with_concepts(clip, [text_encoder.ConceptWord(word, embeddings)])
    for encoder in text_encoder.text_encoders(clip):
        if hasattr(encoder.module, "set_up_textual_embeddings"):
            operations = _grad_safe_operations(encoder.module.operations)
            patched.patcher.add_object_patch(f"{encoder.attribute}.operations", operations)
        prefix = f"{encoder.attribute}.transformer.text_model.encoder.layers"
        for i, layer in enumerate(encoder.module.transformer.text_model.encoder.layers):
            forward = _OutOfPlaceLayer(layer)
            patched.patcher.add_object_patch(
                f"{prefix}.{i}.forward", Checkpointed(forward) if checkpointing else forward
            )
    return patched


class _CopyingNorm:
    """A layer norm of a copy of its input. Hosts from before 2025 add attention outputs to a
    transformer block's input in place (`x += n`) after the norm has kept it for backward."""

    def __init__(self, forward) -> None:
        self.forward = forward

    def __call__(self, x):
        return self.forward(x.clone())


def blocks_add_in_place() -> bool:
    """Whether this host's transformer blocks add in place (probed once from their source)."""
    from comfy.ldm.modules.attention import BasicTransformerBlock

    return "x += n" in inspect.getsource(BasicTransformerBlock)


def copy_norm_inputs(model) -> None:
    """Lets backward through blocks that add in place (see _CopyingNorm)."""
    from comfy.ldm.modules.attention import BasicTransformerBlock

    for name, block in model.model.diffusion_model.named_modules():
        if isinstance(block, BasicTransformerBlock):
            for norm in ("norm1", "norm2"):
                forward = getattr(block, norm).forward
                model.add_object_patch(f"diffusion_model.{name}.{norm}.forward", _CopyingNorm(forward))


def own_weight_copies(patcher) -> None:
    """Gives a training clone its own `patches_uuid`. Dynamic VRAM (ComfyUI 0.33 on NVIDIA) keeps
    each layer's device copy of its weights until a patcher with another `patches_uuid` loads the
    model, and `clone()` keeps the uuid: a run after a KSampler would otherwise compute with the
    copies made under inference mode, which autograd cannot save for backward. The next sampler,
    with the user's uuid, then makes its copies afresh."""
    patcher.patches_uuid = uuid.uuid4()


def release_inference_weights(module: torch.nn.Module) -> None:
    """Weights loaded under the executor's inference mode cannot be saved for backward; swap in
    ordinary tensors with the same values (the model's outputs do not change)."""
    names = [name for name, _ in module.named_parameters()]  # names only: holding every old
    for name in names:  # tensor until the loop ends would double the model's memory at its peak
        param = comfy.utils.get_attr(module, name)
        if param.is_inference():
            comfy.utils.set_attr_param(module, name, param.detach().clone())
        else:
            param.requires_grad_(False)
        del param
