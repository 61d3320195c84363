"""The edit's own cost, timed at the projections it patches (precise where a whole step is too noisy).

The K/V projections see the text context, (batch 2, 77 tokens, 768) with cfg, whatever the image size:
the edit's absolute cost per UNet evaluation is the same at 64 and 512 px, and the per-step overhead at
any resolution is that cost divided by the unpatched step time there.
"""

from __future__ import annotations

import time

import torch

from .host import median


def _context(prepared) -> torch.Tensor:
    cond = prepared.positive[0][0]
    return torch.cat([cond, cond])  # cond and uncond batched, as the sampler does on one device


def _seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def projection_costs(prepared, repeats: int = 30) -> dict:
    """Seconds per UNet evaluation spent in all patched projections: the host's own forward, ours
    outside a sampling run (W i* through the host's projection at every call) and ours inside one
    (W i* once per run, as when ComfyUI samples). Interleaved; min and median over repeats."""
    patches = [p for p in prepared.model.object_patches.values() if hasattr(p, "prev_forward")]
    run = patches[0].run
    x = _context(prepared)
    totals: dict[str, list[float]] = {"unpatched": [], "patched": [], "patched_in_run": []}

    def unpatched() -> None:
        for p in patches:
            p.prev_forward(x)

    def patched() -> None:
        for p in patches:
            p(x)

    with torch.inference_mode():
        for _ in range(repeats):
            totals["unpatched"].append(_seconds(unpatched))
            totals["patched"].append(_seconds(patched))
            with run.marked():
                patched()  # the run's first evaluation computes the rows
                totals["patched_in_run"].append(_seconds(patched))
    out = {"projections": len(patches), "context": list(x.shape)}
    for name, values in totals.items():
        out[f"{name}_min_s"] = min(values)
        out[f"{name}_median_s"] = median(values)
    for name, edit in (("patched", "edit"), ("patched_in_run", "edit_in_run")):
        out[f"{edit}_min_s"] = out[f"{name}_min_s"] - out["unpatched_min_s"]
        out[f"{edit}_median_s"] = out[f"{name}_median_s"] - out["unpatched_median_s"]
    return out
