"""The loss curve as an IMAGE, so a PreviewImage node shows it live in the graph."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw


def loss_curve_image(losses: list[float], width: int = 640, height: int = 320) -> torch.Tensor:
    """(1, H, W, 3) float image of the per-step loss with a running mean."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 56, width - 12, 12, height - 28
    draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
    if losses:
        values = np.asarray(losses, dtype=np.float64)
        lo, hi = float(values.min()), float(values.max())
        span = hi - lo or 1.0

        def point(i: int, v: float) -> tuple[float, float]:
            x = left + (right - left) * (i / max(1, len(values) - 1))
            return x, bottom - (bottom - top) * (v - lo) / span

        window = max(1, len(values) // 20)
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        draw.line([point(i, v) for i, v in enumerate(values)], fill=(150, 180, 230), width=1)
        offset = window - 1
        draw.line([point(i + offset, v) for i, v in enumerate(smooth)], fill=(20, 60, 180), width=2)
        draw.text((4, top), f"{hi:.4g}", fill=(0, 0, 0))
        draw.text((4, bottom - 10), f"{lo:.4g}", fill=(0, 0, 0))
        draw.text(
            (left, bottom + 8), f"loss over {len(values)} steps (last {values[-1]:.4g})", fill=(0, 0, 0)
        )
    array = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(array)[None]
