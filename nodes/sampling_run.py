"""Marks ComfyUI sampling runs, so patched projections may compute what depends only on the
weights (W i*, W_K ī_super) once per run instead of at every call.

Within one run of a sampler the weights stay as loaded: patches and casting are applied before
it starts, and offloading moves weights without changing them. Two things can change them
mid-run, and a run with either is not marked: scheduled weight hooks (`hook_patches`, e.g.
keyframed LoRA hooks) and training loops (autograd on; e.g. TrainLoraNode's adapters are
weight wrappers whose values move every step).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import comfy.patcher_extension
import torch

_WRAPPER_KEY = "perfusion_sampling_run"


class SamplingRun:
    """Shared by one install's projections and its OUTER_SAMPLE wrapper; `generation` counts runs."""

    def __init__(self) -> None:
        self.generation = 0
        self._depth = 0

    @property
    def active(self) -> bool:
        """True inside a marked run, where weight-only results may be reused."""
        return self._depth > 0 and not torch.is_grad_enabled()

    @contextlib.contextmanager
    def marked(self) -> Iterator[None]:
        """One run: weight-only results computed inside are valid until it ends. Entering and
        leaving both start a new generation, so a run nested in another (another model sharing
        these projections, say) never sees the outer run's results, nor the outer run its own."""
        self.generation += 1
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            self.generation += 1

    def wrap(self, executor, *args, **kwargs):
        """The OUTER_SAMPLE wrapper: marks the run unless weight hooks may change weights in it."""
        patcher = getattr(executor.class_obj, "model_patcher", None)
        if getattr(patcher, "hook_patches", None):
            return executor(*args, **kwargs)
        with self.marked():
            return executor(*args, **kwargs)


def install(model) -> SamplingRun:
    """A run marker wrapped around `model`'s sampling (a clone we own), replacing an earlier one."""
    run = SamplingRun()
    model.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, _WRAPPER_KEY)
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, _WRAPPER_KEY, run.wrap)
    return run
