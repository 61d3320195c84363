"""The bias chooser's curve as an IMAGE: fidelity gain and alignment over the bias grid, the chosen
bias marked, so a Preview Image shows why it was chosen."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..perfusion_core.operating_point import BiasPoint, OperatingCurve

FIDELITY, ALIGNMENT, CHOSEN = (200, 60, 40), (30, 90, 200), (20, 140, 60)


def curve_image(
    curve: OperatingCurve, chosen: BiasPoint, width: int = 640, height: int = 320
) -> torch.Tensor:
    """(1, H, W, 3) float image. Both scores are drawn as the shares the rule multiplies (their raw
    ranges differ), and their product, the rule's score, as a thin green line."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 40, width - 16, 28, height - 40
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    biases = [p.bias for p in curve.points]
    lo, hi = min(biases), max(biases)

    def x(bias: float) -> float:
        return left + (right - left) * ((bias - lo) / (hi - lo) if hi > lo else 0.5)

    def y(share: float) -> float:
        return bottom - (bottom - top) * min(max(share, 0.0), 1.0)

    shares = (
        ([curve.gain(p) for p in curve.points], FIDELITY, 2),
        ([curve.alignment_share(p) for p in curve.points], ALIGNMENT, 2),
        ([curve.knee_score(p) for p in curve.points], CHOSEN, 1),
    )
    for values, colour, line in shares:
        points = [(x(b), y(float(v))) for b, v in zip(biases, values)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=line)
        for px, py in points:
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
    draw.line([(x(chosen.bias), top), (x(chosen.bias), bottom)], fill=CHOSEN, width=2)
    for b in biases:
        draw.text((x(b) - 10, bottom + 6), f"{b:.2f}", fill=(0, 0, 0))
    draw.text(
        (left, 8),
        f"fidelity gain (red) x alignment (blue) = score (green); chosen bias {chosen.bias:.2f}",
        fill=(0, 0, 0),
    )
    draw.text((left, bottom + 22), "bias", fill=(0, 0, 0))
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]
