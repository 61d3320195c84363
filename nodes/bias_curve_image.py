"""The bias chooser's curve as an IMAGE: fidelity gain and alignment over the bias grid, the chosen
bias marked, so a Preview Image shows why it was chosen."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..perfusion_core.operating_point import FIDELITY_SHARE, BiasPoint, OperatingCurve

FIDELITY, ALIGNMENT, CHOSEN = (200, 60, 40), (30, 90, 200), (20, 140, 60)


def curve_image(
    curve: OperatingCurve, chosen: BiasPoint, width: int = 640, height: int = 320
) -> torch.Tensor:
    """(1, H, W, 3) float image. Both scores are drawn min-max scaled over the grid (their raw ranges
    differ); the dashed line is the fidelity gain the rule keeps."""
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

    gains = np.array([curve.gain(p) for p in curve.points])
    aligns = np.array([p.alignment for p in curve.points])
    span = float(aligns.max() - aligns.min()) or 1.0
    for values, colour in ((gains, FIDELITY), ((aligns - aligns.min()) / span, ALIGNMENT)):
        points = [(x(b), y(float(v))) for b, v in zip(biases, values)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for px, py in points:
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
    for px in range(left, right, 8):
        draw.line([(px, y(FIDELITY_SHARE)), (px + 4, y(FIDELITY_SHARE))], fill=FIDELITY)
    draw.line([(x(chosen.bias), top), (x(chosen.bias), bottom)], fill=CHOSEN, width=2)
    for b in biases:
        draw.text((x(b) - 10, bottom + 6), f"{b:.2f}", fill=(0, 0, 0))
    draw.text(
        (left, 8),
        f"fidelity gain (red), alignment (blue); chosen bias {chosen.bias:.2f} (green)",
        fill=(0, 0, 0),
    )
    draw.text((left, bottom + 22), "bias", fill=(0, 0, 0))
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]
