"""Read a toy-world image back into attributes, from the pixels alone.

Each 8 px cell is averaged; the background is the palette background nearest the median of the
outer ring of cells (no position touches it); an object is present at a position when its four
cells differ from that background; each cell's colour is the nearest object colour (the world's
six and the concepts' own). Works on any
square image size (resized to 64 px first) and on noisy samples, which is what a sampler returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .world import BACKGROUNDS, COLOURS, CONCEPT_COLOURS, GRID, IMAGE_SIZE, POSITIONS, Pattern, Scene, Thing

# Mean RGB distance (0-255 scale) of a position's cells from the background above which an object
# is there: the closest object colour to any background is ~100 away.
PRESENCE = 60.0

_BG_NAMES = list(BACKGROUNDS)
_BG_RGB = np.array([BACKGROUNDS[n] for n in _BG_NAMES], float)
_PALETTE = COLOURS | CONCEPT_COLOURS  # a concept's colour must win against every world colour
_COLOUR_NAMES = list(_PALETTE)
_COLOUR_RGB = np.array([_PALETTE[n] for n in _COLOUR_NAMES], float)


@dataclass(frozen=True)
class Reading:
    """What an image shows. ``objects`` maps each position with an object to its four cell colours;
    ``salience`` is every position's distance from the background, whether present or not."""

    background: str
    objects: dict[str, Pattern]
    salience: dict[str, float]

    def ranked(self) -> list[str]:
        """Positions holding an object, most salient first."""
        return sorted(self.objects, key=lambda p: -self.salience[p])


def cells(image: np.ndarray) -> np.ndarray:
    """``[8, 8, 3]`` mean colour (0-255) of each cell of an ``[H, W, 3]`` image (uint8, or float in [0, 1])."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    if img.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE):
        img = np.asarray(Image.fromarray(img).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR))
    c = IMAGE_SIZE // GRID
    return img.astype(float).reshape(GRID, c, GRID, c, 3).mean(axis=(1, 3))


def _nearest(rgb: np.ndarray, palette: np.ndarray) -> np.ndarray:
    return np.linalg.norm(rgb[..., None, :] - palette, axis=-1).argmin(axis=-1)


def read(image: np.ndarray) -> Reading:
    grid = cells(image)
    ring = np.concatenate([grid[0], grid[-1], grid[1:-1, 0], grid[1:-1, -1]])
    bg_rgb = np.median(ring, axis=0)
    background = _BG_NAMES[int(_nearest(bg_rgb, _BG_RGB))]
    objects: dict[str, Pattern] = {}
    salience: dict[str, float] = {}
    for pos, (r, c) in POSITIONS.items():
        patch = grid[r : r + 2, c : c + 2].reshape(4, 3)
        salience[pos] = float(np.linalg.norm(patch - bg_rgb, axis=-1).mean())
        if salience[pos] > PRESENCE:
            objects[pos] = tuple(_COLOUR_NAMES[i] for i in _nearest(patch, _COLOUR_RGB))
    return Reading(background, objects, salience)


def block_colour(pattern: Pattern) -> str:
    """The colour most of a block's cells show."""
    return max(set(pattern), key=pattern.count)


def thing_matches(reading: Reading, thing: Thing) -> bool:
    """Is ``thing`` at its position, its colour on most of its cells?"""
    seen = reading.objects.get(thing.position)
    return seen is not None and block_colour(seen) == block_colour(thing.pattern)


def colour_anywhere(reading: Reading, colour: str) -> str | None:
    """The most salient position whose block is ``colour``, or None: fidelity, wherever it landed."""
    for pos in reading.ranked():
        if block_colour(reading.objects[pos]) == colour:
            return pos
    return None


def score_scene(reading: Reading, scene: Scene) -> dict[str, bool]:
    """Background, position (the scene's positions are the most salient objects) and colour (each
    block shows its colour where the caption put it)."""
    expected = {t.position for t in scene.things}
    top = set(reading.ranked()[: len(expected)])
    return {
        "background": reading.background == scene.background,
        "position": top == expected,
        "colour": all(thing_matches(reading, t) for t in scene.things),
    }


def accuracy(scores: Iterable[dict[str, bool]]) -> dict[str, float]:
    """Fraction correct per attribute, plus ``all`` (every attribute of a sample right)."""
    rows = list(scores)
    if not rows:
        return {}
    out = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
    out["all"] = sum(all(r.values()) for r in rows) / len(rows)
    return out
