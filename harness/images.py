"""Decoding the images ComfyUI saves into arrays tests can compare."""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

__all__ = ["decode_image", "load_image"]


def _to_array(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def load_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as float32 ``H x W x 3`` in ``[0, 1]``."""
    with Image.open(path) as img:
        return _to_array(img)


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes (PNG from ``/view``) as float32 ``H x W x 3`` in ``[0, 1]``."""
    with Image.open(io.BytesIO(data)) as img:
        return _to_array(img)
