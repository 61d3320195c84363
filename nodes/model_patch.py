"""Installs Perfusion's gated rank-1 edits on a ModelPatcher clone (host glue, no math here).

The edit is an object patch on each cross-attention `to_k.forward` / `to_v.forward` — the only
hook that sees every token's encoding and returns the projection, so the edit is exact. It calls
the previous forward for `W e` and `W i*`, which keeps weight casting (fp16/bf16/fp8), low-VRAM
offloading and LoRA in force. Replacing the module itself would drop LoRA (docs/host.md,
"Patching cross-attention").
"""

from __future__ import annotations

import logging
import types
from collections.abc import Callable

import comfy.patcher_extension
import comfy.utils
import torch

from ..perfusion_core.concept_set import AppliedConcept, ConceptSet, PlanSource, Projection, ProjectionPlan
from ..perfusion_core.layers import CrossAttentionLayer, find_cross_attention_layers
from . import key_lock, sampling_run, text_encoder
from .sampling_run import SamplingRun

log = logging.getLogger("comfyui-perfusion")
_REBIND_KEY = "perfusion_rebind_projections"


class PerfusionProjection:
    """Replacement forward of one K or V projection: previous forward plus the gated edit.

    Its target never changes once attached (clones share object patches; chaining builds a new
    one); its only state is the output rows of the current sampling run (see sampling_run).
    """

    def __init__(
        self,
        prev_forward: Callable,
        source: PlanSource,
        layer: str,
        kind: Projection,
        run: SamplingRun | None = None,
    ) -> None:
        self.prev_forward = prev_forward
        self.source = source
        self.layer = layer
        self.kind = kind
        self.run = run
        self._rows_key: tuple | None = None
        self._rows: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        base = self.prev_forward(x, *args, **kwargs)
        plan = self.source.plan(self.layer, self.kind, x.device)
        if plan is None:
            return base
        progress = self.run.progress if self.run is not None and plan.edit.scheduled else None
        if progress is not None:
            progress = progress.to(x.device)
        return plan.edit.apply(base, x, self.output_rows(plan, x), progress)

    def on_model(self, original: torch.nn.Module, model: torch.nn.Module, path: str) -> PerfusionProjection:
        """This edit moved from `original` to another instance of the model: the previous forward,
        when it is the projection's own, bound to that instance's projection at `path` (a `.forward`
        object-patch path)."""
        prev = self.prev_forward
        module_path = path.rsplit(".", 1)[0]
        if getattr(prev, "__self__", None) is comfy.utils.get_attr(original, module_path):
            prev = types.MethodType(prev.__func__, comfy.utils.get_attr(model, module_path))
        else:
            log.warning(
                "Perfusion: %s was patched by another node before the concept; a copy of the model keeps "
                "calling that patch on the original model's weights",
                path,
            )
        return PerfusionProjection(prev, self.source, self.layer, self.kind, self.run)

    def output_rows(self, plan: ProjectionPlan, x: torch.Tensor) -> torch.Tensor:
        """−W i* and the targets, through the host's own projection: once per sampling run."""
        reuse = self.run is not None and self.run.active
        key = (self.run.generation, x.device, x.dtype) if reuse else None
        if reuse and key == self._rows_key:
            return self._rows
        edit = plan.edit
        inputs = [edit.i_star.new_zeros(1, edit.i_star.shape[1]), edit.i_star]
        if plan.target_inputs is not None:
            inputs.append(plan.target_inputs)
        # One call of the host's projection for the zero row (its bias), W i* and the key-lock inputs.
        projected = self.prev_forward(torch.cat(inputs).to(x.dtype).unsqueeze(0)).squeeze(0).float()
        j = edit.num_concepts
        w_i_star = projected[1 : 1 + j] - projected[0]
        targets = projected[1 + j :] - projected[0] if plan.target_inputs is not None else plan.target_outputs
        rows = edit.output_rows(w_i_star, targets)
        if reuse:
            self._rows_key, self._rows = key, rows
        return rows


def cross_attention_layers(model) -> list[CrossAttentionLayer]:
    """The denoiser's cross-attention layers, named as object-patch paths of `model.model`."""
    return find_cross_attention_layers(model.model)


def served_layers(model, clip) -> list[CrossAttentionLayer]:
    """The layers a concept edits, refusing models the edit cannot serve: no UNet cross-attention
    (SD3, Flux and other MMDiT/DiT models), or a CLIP whose encodings are not the layers' input."""
    layers = cross_attention_layers(model)
    family = type(model.model.model_config).__name__
    if not layers:
        raise ValueError(
            f"the loaded model is {family} ({type(model.model.diffusion_model).__name__}): it has no UNet "
            "cross-attention to_k/to_v projections for a Perfusion edit. Concepts serve SD1.x, SD2.x and "
            "SDXL-family models"
        )
    width = text_encoder.encoder_width(clip)
    if layers[0].context_dim != width:
        raise ValueError(
            f"the CLIP does not belong to the loaded {family} model: its text encoders give "
            f"{width}-wide encodings, the model's cross-attention reads {layers[0].context_dim}"
        )
    return layers


def _projection_path(layer: CrossAttentionLayer, kind: Projection) -> str:
    return f"{layer.key_path if kind == 'k' else layer.value_path}.forward"


def applied_set(model) -> ConceptSet | None:
    """The concepts this pack applied to `model` (read from its V patches), or None."""
    layers = cross_attention_layers(model)
    if not layers:
        return None
    current = model.get_model_object(_projection_path(layers[0], "v"))
    if isinstance(current, PerfusionProjection) and isinstance(current.source, ConceptSet):
        return current.source
    return None


def current_concepts(model) -> tuple[AppliedConcept, ...]:
    """Concepts already applied to `model` by this pack."""
    source = applied_set(model)
    return source.applied if source is not None else ()


def _rebind_on_clone(original, clone) -> None:
    """ON_CLONE callback. Clones made on a new instance of the model (`force_deepcopy`,
    `disable_dynamic`: TorchCompileModel, hooks, multi-GPU) copy the object patches, whose previous
    forwards are bound to the original's projections: rebound to the clone's own, the edit reads the
    clone's weights, LoRA patches included."""
    if clone.model is original.model:
        return
    for path, patch in list(clone.object_patches.items()):
        if isinstance(patch, PerfusionProjection):
            clone.object_patches[path] = patch.on_model(original.model, clone.model, path)


def _rebind_clones(patched) -> None:
    """Registers _rebind_on_clone once per patcher (hosts without ON_CLONE have no such clones)."""
    on_clone = getattr(comfy.patcher_extension.CallbacksMP, "ON_CLONE", None)
    if on_clone is not None and hasattr(patched, "add_callback_with_key"):
        patched.remove_callbacks_with_key(on_clone, _REBIND_KEY)
        patched.add_callback_with_key(on_clone, _REBIND_KEY, _rebind_on_clone)


def _install(model, source: PlanSource, *, key_edits: bool, per_run_rows: bool, scheduled: bool = False):
    patched = model.clone()
    _rebind_clones(patched)
    run = sampling_run.install(patched, track_progress=scheduled) if per_run_rows else None
    for layer in cross_attention_layers(model):
        for kind in ("k", "v"):
            if kind == "k" and not key_edits:
                continue
            path = _projection_path(layer, kind)
            current = patched.get_model_object(path)
            prev = current.prev_forward if isinstance(current, PerfusionProjection) else current
            patched.add_object_patch(path, PerfusionProjection(prev, source, layer.name, kind, run))
    return patched


def apply_concepts(model, applied: tuple[AppliedConcept, ...]):
    """A clone of `model` whose edits cover earlier concepts plus `applied`, jointly (docs/method.md §4)."""
    earlier = current_concepts(model)
    source = ConceptSet(earlier + applied, new_from=len(earlier))
    patched = _install(
        model, source, key_edits=source.has_key_edits, per_run_rows=True, scheduled=source.has_schedule
    )
    if source.has_global_lock:
        key_lock.install_key_context(patched)
    return patched


def install_source(model, source: PlanSource, *, key_edits: bool = True):
    """A clone whose V (and, with `key_edits`, K) projections are edited by `source` (training
    state: its i* moves every step, so nothing is reused across calls)."""
    return _install(model, source, key_edits=key_edits, per_run_rows=False)
