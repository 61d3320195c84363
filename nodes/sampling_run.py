"""Marks ComfyUI sampling runs, so patched projections may compute what depends only on the
weights (W i*, W_K ī_super) once per run instead of at every call.

Within one run of a sampler the weights stay as loaded: patches and casting are applied before
it starts, and offloading moves weights without changing them. Two things can change them
mid-run, and a run with either is not marked: scheduled weight hooks (`hook_patches`, e.g.
keyframed LoRA hooks) and training loops (autograd on; e.g. TrainLoraNode's adapters are
weight wrappers whose values move every step).

A run also says how far sampling has got (`progress`), for concepts whose gate bias follows a
schedule: an APPLY_MODEL wrapper reads each model call's sigma.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import comfy.patcher_extension
import torch

_WRAPPER_KEY = "perfusion_sampling_run"


def sampling_progress(model_sampling, sigma: torch.Tensor) -> torch.Tensor:
    """How far sampling has got at `sigma`: 0 at the model's largest sigma, 1 at its smallest, linear
    in the model's own timestep. For SD1.x, SD2.x and SDXL this inverts the host's
    `percent_to_sigma`, so it counts as ControlNet's start/end percents do, whatever the scheduler.
    A 0-dim float32 tensor on `sigma`'s device (no sync with the device); a batch of several sigmas
    counts by its largest."""
    ends = torch.stack([torch.as_tensor(model_sampling.sigma_max), torch.as_tensor(model_sampling.sigma_min)])
    sigmas = torch.cat([sigma.detach().float().amax().reshape(1), ends.float().to(sigma.device)])
    t = model_sampling.timestep(sigmas).float()
    return ((t[1] - t[0]) / (t[1] - t[2]).clamp(min=1e-6)).clamp(0.0, 1.0)


class SamplingRun:
    """Shared by one install's projections and its wrappers; `generation` counts runs, `progress`
    is the current model call's place in sampling (None outside a call)."""

    def __init__(self) -> None:
        self.generation = 0
        self._depth = 0
        self.progress: torch.Tensor | None = None

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
            self.progress = None

    def wrap(self, executor, *args, **kwargs):
        """The OUTER_SAMPLE wrapper: marks the run unless weight hooks may change weights in it."""
        patcher = getattr(executor.class_obj, "model_patcher", None)
        if getattr(patcher, "hook_patches", None):
            return executor(*args, **kwargs)
        with self.marked():
            return executor(*args, **kwargs)

    def at_step(self, executor, x, t, *args, **kwargs):
        """The APPLY_MODEL wrapper: records the call's progress (`t` is its sigma) for the edits."""
        previous, self.progress = self.progress, sampling_progress(executor.class_obj.model_sampling, t)
        try:
            return executor(x, t, *args, **kwargs)
        finally:
            self.progress = previous


def install(model, *, track_progress: bool = False) -> SamplingRun:
    """A run marker wrapped around `model`'s sampling (a clone we own), replacing an earlier one;
    with `track_progress`, also one around each model call that records sampling progress."""
    run = SamplingRun()
    wrappers = comfy.patcher_extension.WrappersMP
    for kind, wrapper, wanted in (
        (wrappers.OUTER_SAMPLE, run.wrap, True),
        (wrappers.APPLY_MODEL, run.at_step, track_progress),
    ):
        model.remove_wrappers_with_key(kind, _WRAPPER_KEY)
        if wanted:
            model.add_wrapper_with_key(kind, _WRAPPER_KEY, wrapper)
    return run
