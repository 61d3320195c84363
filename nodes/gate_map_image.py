"""A gate map as an IMAGE: one row per prompt token, one column per concept, each cell the gate."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

_ROW, _LABEL, _CELL, _PAD = 22, 150, 96, 8
_ON = np.array((200, 30, 30))


def gate_map_image(
    tokens: Sequence[str], columns: Sequence[str], gates: torch.Tensor, title: str
) -> torch.Tensor:
    """(1, H, W, 3) float image of `gates` (len(tokens) x len(columns), values in 0..1)."""
    font = ImageFont.load_default(size=14)
    width = _PAD * 2 + _LABEL + _CELL * len(columns)
    top = _PAD + 2 * _ROW
    img = Image.new("RGB", (width, top + _ROW * len(tokens) + _PAD), "white")
    draw = ImageDraw.Draw(img)
    draw.text((_PAD, _PAD), title[: max(8, width // 8)], fill=(0, 0, 0), font=font)
    for j, name in enumerate(columns):
        draw.text((_PAD + _LABEL + j * _CELL + 4, _PAD + _ROW), name, fill=(0, 0, 0), font=font)
    for i, token in enumerate(tokens):
        y = top + i * _ROW
        draw.text((_PAD, y + 3), token[:18], fill=(0, 0, 0), font=font)
        for j in range(len(columns)):
            g = float(gates[i, j])
            colour = tuple(int(c) for c in np.round(255 + (_ON - 255) * g))
            x = _PAD + _LABEL + j * _CELL
            draw.rectangle([x, y, x + _CELL - 2, y + _ROW - 2], fill=colour)
            draw.text((x + 4, y + 3), f"{g:.2f}", fill=(255, 255, 255) if g > 0.5 else (0, 0, 0), font=font)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]
