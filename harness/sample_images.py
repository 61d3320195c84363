"""Deterministic toy training images (a coloured "toy" on a plain background) and their masks.

Random-weight fixtures cannot judge likeness, so these only need to be varied and reproducible.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def toy_image(
    index: int, size: int = 96, colour: tuple[int, int, int] = (160, 100, 50)
) -> tuple[Image.Image, Image.Image]:
    """(RGB image, L mask) of a bear-like shape whose pose and background vary with `index`."""
    rng = np.random.default_rng(index)
    background = tuple(int(c) for c in rng.integers(120, 255, 3))
    img = Image.new("RGB", (size, size), background)
    mask = Image.new("L", (size, size), 0)
    cx, cy = size * (0.4 + 0.2 * rng.random()), size * (0.45 + 0.15 * rng.random())
    r = size * (0.18 + 0.06 * rng.random())
    parts = [
        (cx, cy + r * 0.9, r * 1.1),  # body
        (cx, cy - r * 0.5, r * 0.8),  # head
        (cx - r * 0.7, cy - r * 1.1, r * 0.3),  # ears
        (cx + r * 0.7, cy - r * 1.1, r * 0.3),
    ]
    for draw, fill in ((ImageDraw.Draw(img), colour), (ImageDraw.Draw(mask), 255)):
        for x, y, rad in parts:
            draw.ellipse([x - rad, y - rad, x + rad, y + rad], fill=fill)
    eye = ImageDraw.Draw(img)
    for dx in (-0.3, 0.3):
        eye.ellipse([cx + dx * r - 2, cy - r * 0.6 - 2, cx + dx * r + 2, cy - r * 0.6 + 2], fill=(0, 0, 0))
    return img, mask


def write_toy_images(folder: str | Path, prefix: str, count: int, **kwargs) -> list[str]:
    """Writes `<prefix>_<i>.png` (RGBA: the alpha channel is the mask LoadImage returns) and
    returns the file names."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        img, mask = toy_image(i, **kwargs)
        rgba = img.copy()
        rgba.putalpha(Image.eval(mask, lambda v: 255 - v))  # LoadImage's MASK is 1 − alpha
        name = f"{prefix}_{i}.png"
        rgba.save(folder / name)
        names.append(name)
    return names
