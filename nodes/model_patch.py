"""Installs Perfusion's gated rank-1 edits on a ModelPatcher clone (host glue, no math here).

The edit is an object patch on each cross-attention `to_k.forward` / `to_v.forward` — the only
hook that sees every token's encoding and returns the projection, so the edit is exact. It calls
the previous forward for `W e` and `W i*`, which keeps weight casting (fp16/bf16/fp8), low-VRAM
offloading and LoRA in force. Replacing the module itself would drop LoRA (comfyui-notes.md).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..perfusion_core.concept_set import AppliedConcept, ConceptSet, PlanSource, Projection
from ..perfusion_core.layers import CrossAttentionLayer, find_cross_attention_layers
from . import key_lock


class PerfusionProjection:
    """Replacement forward of one K or V projection: previous forward plus the gated edit.

    Never mutated once attached (clones share object patches); chaining builds a new one.
    """

    def __init__(self, prev_forward: Callable, source: PlanSource, layer: str, kind: Projection) -> None:
        self.prev_forward = prev_forward
        self.source = source
        self.layer = layer
        self.kind = kind

    def __call__(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        base = self.prev_forward(x, *args, **kwargs)
        plan = self.source.plan(self.layer, self.kind, x.device)
        if plan is None:
            return base
        edit = plan.edit
        rows = [edit.i_star.new_zeros(1, edit.i_star.shape[1]), edit.i_star]
        if plan.target_inputs is not None:
            rows.append(plan.target_inputs)
        # One call of the host's projection for the zero row (its bias), W i* and the key-lock inputs.
        projected = self.prev_forward(torch.cat(rows).to(x.dtype).unsqueeze(0)).squeeze(0).float()
        j = edit.num_concepts
        w_i_star = projected[1 : 1 + j] - projected[0]
        targets = projected[1 + j :] - projected[0] if plan.target_inputs is not None else plan.target_outputs
        return base + edit.delta(x, w_i_star, targets).to(base.dtype)


def cross_attention_layers(model) -> list[CrossAttentionLayer]:
    """The denoiser's cross-attention layers, named as object-patch paths of `model.model`."""
    return find_cross_attention_layers(model.model)


def _projection_path(layer: CrossAttentionLayer, kind: Projection) -> str:
    return f"{layer.key_path if kind == 'k' else layer.value_path}.forward"


def current_concepts(model) -> tuple[AppliedConcept, ...]:
    """Concepts already applied to `model` by this pack (read from its V patches)."""
    layers = cross_attention_layers(model)
    if not layers:
        return ()
    current = model.get_model_object(_projection_path(layers[0], "v"))
    if isinstance(current, PerfusionProjection) and isinstance(current.source, ConceptSet):
        return current.source.applied
    return ()


def _install(model, source: PlanSource, *, key_edits: bool):
    patched = model.clone()
    for layer in cross_attention_layers(model):
        for kind in ("k", "v"):
            if kind == "k" and not key_edits:
                continue
            path = _projection_path(layer, kind)
            current = patched.get_model_object(path)
            prev = current.prev_forward if isinstance(current, PerfusionProjection) else current
            patched.add_object_patch(path, PerfusionProjection(prev, source, layer.name, kind))
    return patched


def apply_concepts(model, applied: tuple[AppliedConcept, ...]):
    """A clone of `model` whose edits cover earlier concepts plus `applied`, jointly (spec §4)."""
    source = ConceptSet(current_concepts(model) + applied)
    patched = _install(model, source, key_edits=source.has_key_edits)
    if source.has_global_lock:
        key_lock.install_key_context(patched)
    return patched


def install_source(model, source: PlanSource):
    """A clone whose every K and V projection is edited by `source` (training state)."""
    return _install(model, source, key_edits=True)
