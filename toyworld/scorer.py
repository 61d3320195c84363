"""Read a toy-world image back into attributes, from the pixels alone.

Each 8 px cell is averaged; the background is the palette background nearest the median of the
outer ring of cells (objects cover at most 6 of its 32); at each place, the footprint's cells that
differ from that background are the object's: present when at least two are, its shape the
template (:data:`toyworld.world.SHAPES`) that overlaps them best, its colour the nearest object
colour (the world's four and the concepts' own) that most of them show. Works on any square image
size (resized to 72 px first) and on noisy samples, which is what a sampler returns.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .world import (
    BACKGROUNDS,
    COLOURS,
    CONCEPT_COLOURS,
    FOOTPRINT,
    GRID,
    IMAGE_SIZE,
    POSITIONS,
    SHAPES,
    Scene,
    Thing,
)

# RGB distance (0-255 scale) of a cell from the background above which it belongs to an object: the
# closest object colour to any background is ~100 away.
PRESENCE = 60.0

_BG_NAMES = list(BACKGROUNDS)
_BG_RGB = np.array([BACKGROUNDS[n] for n in _BG_NAMES], float)
_PALETTE = COLOURS | CONCEPT_COLOURS  # a concept's colour must win against every world colour
_COLOUR_NAMES = list(_PALETTE)
_COLOUR_RGB = np.array([_PALETTE[n] for n in _COLOUR_NAMES], float)


@dataclass(frozen=True)
class Seen:
    """An object as read: its colour and shape."""

    colour: str
    shape: str


@dataclass(frozen=True)
class Reading:
    """What an image shows. ``objects`` maps each place with an object to what is there;
    ``salience`` is every place's summed distance from the background, whether present or not."""

    background: str
    objects: dict[str, Seen]
    salience: dict[str, float]

    def ranked(self) -> list[str]:
        """Places holding an object, most salient first."""
        return sorted(self.objects, key=lambda p: -self.salience[p])


def cells(image: np.ndarray) -> np.ndarray:
    """``[9, 9, 3]`` mean colour (0-255) of each cell of an ``[H, W, 3]`` image (uint8, or float in [0, 1])."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    if img.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE):
        img = np.asarray(Image.fromarray(img).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR))
    c = IMAGE_SIZE // GRID
    return img.astype(float).reshape(GRID, c, GRID, c, 3).mean(axis=(1, 3))


def _nearest(rgb: np.ndarray, palette: np.ndarray) -> np.ndarray:
    return np.linalg.norm(rgb[..., None, :] - palette, axis=-1).argmin(axis=-1)


def _shape(mask: np.ndarray) -> str:
    def iou(name: str) -> float:
        t = SHAPES[name]
        return (mask & t).sum() / (mask | t).sum()

    return max(SHAPES, key=iou)


def read(image: np.ndarray) -> Reading:
    grid = cells(image)
    ring = np.concatenate([grid[0], grid[-1], grid[1:-1, 0], grid[1:-1, -1]])
    bg_rgb = np.median(ring, axis=0)
    background = _BG_NAMES[int(_nearest(bg_rgb, _BG_RGB))]
    objects: dict[str, Seen] = {}
    salience: dict[str, float] = {}
    for pos, (r, c) in POSITIONS.items():
        patch = grid[r : r + FOOTPRINT, c : c + FOOTPRINT]
        distance = np.linalg.norm(patch - bg_rgb, axis=-1)
        mask = distance > PRESENCE
        salience[pos] = float(distance[mask].sum())
        if mask.sum() >= 2:
            colours = Counter(_COLOUR_NAMES[i] for i in _nearest(patch[mask], _COLOUR_RGB))
            objects[pos] = Seen(colours.most_common(1)[0][0], _shape(mask))
    return Reading(background, objects, salience)


def thing_matches(reading: Reading, thing: Thing) -> bool:
    """Is ``thing`` at its place, in its colour and shape?"""
    return reading.objects.get(thing.position) == Seen(thing.colour, thing.shape)


def colour_anywhere(reading: Reading, colour: str) -> str | None:
    """The most salient place whose object is ``colour``, or None: fidelity, wherever it landed."""
    for pos in reading.ranked():
        if reading.objects[pos].colour == colour:
            return pos
    return None


def score_scene(reading: Reading, scene: Scene) -> dict[str, bool]:
    """Background, position (the scene's places are the most salient objects), and each object's
    colour and shape where the caption put it."""
    expected = {t.position for t in scene.things}
    top = set(reading.ranked()[: len(expected)])
    seen = [reading.objects.get(t.position) for t in scene.things]
    return {
        "background": reading.background == scene.background,
        "position": top == expected,
        "colour": all(s is not None and s.colour == t.colour for s, t in zip(seen, scene.things)),
        "shape": all(s is not None and s.shape == t.shape for s, t in zip(seen, scene.things)),
    }


def accuracy(scores: Iterable[dict[str, bool]]) -> dict[str, float]:
    """Fraction correct per attribute, plus ``all`` (every attribute of a sample right)."""
    rows = list(scores)
    if not rows:
        return {}
    out = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
    out["all"] = sum(all(r.values()) for r in rows) / len(rows)
    return out
