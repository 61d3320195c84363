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


def _probe_rows(projection) -> torch.Tensor:
    """What the patched forward sends through the host's projection a second time (zero row, W i*, ...)."""
    plan = projection.source.plan(projection.layer, projection.kind, torch.device("cpu"))
    rows = [plan.edit.i_star.new_zeros(1, plan.edit.i_star.shape[1]), plan.edit.i_star]
    if plan.target_inputs is not None:
        rows.append(plan.target_inputs)
    return torch.cat(rows).unsqueeze(0)


def projection_costs(prepared, repeats: int = 30) -> dict:
    """Seconds per UNet evaluation spent in all patched projections: unpatched forward, patched forward,
    and the second host call (probe) inside it. Interleaved; min and median over repeats."""
    patches = [p for p in prepared.model.object_patches.values() if hasattr(p, "prev_forward")]
    x = _context(prepared)
    probes = [_probe_rows(p) for p in patches]
    totals: dict[str, list[float]] = {"unpatched": [], "patched": [], "probe": []}
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            for p in patches:
                p.prev_forward(x)
            mid = time.perf_counter()
            for p in patches:
                p(x)
            end = time.perf_counter()
            for p, rows in zip(patches, probes):
                p.prev_forward(rows)
            totals["unpatched"].append(mid - start)
            totals["patched"].append(end - mid)
            totals["probe"].append(time.perf_counter() - end)
    out = {"projections": len(patches), "context": list(x.shape)}
    for name, values in totals.items():
        out[f"{name}_min_s"] = min(values)
        out[f"{name}_median_s"] = median(values)
    out["edit_min_s"] = out["patched_min_s"] - out["unpatched_min_s"]
    out["edit_median_s"] = out["patched_median_s"] - out["unpatched_median_s"]
    return out
