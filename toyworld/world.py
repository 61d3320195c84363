"""The toy world: 64 px scenes on an 8x8 grid of 8 px cells, one cell per latent pixel.

A scene is a flat background colour and one or two 2x2-cell objects at named positions. World
objects are solid "blocks" of one of six colours; concepts (:data:`CONCEPTS`) are blocks of a colour
the world never shows (brown, pink), which the model can only learn from a concept's images. (A
first design gave concepts two-colour cell patterns: the UNet, which only ever drew solid blocks,
rendered them as solid blocks of one of the two colours at every bias.) Objects sit on whole cells so the exact
autoencoder (:mod:`toyworld.vae`) loses nothing: what the UNet learns is all there is to learn.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

IMAGE_SIZE = 64
GRID = 8
CELL = IMAGE_SIZE // GRID
SUPERCLASS = "block"

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (150, 60, 190),
    "orange": (245, 140, 30),
}
# Colours only concepts have: never in a world scene or caption, each >= 100 away from every other.
CONCEPT_COLOURS: dict[str, tuple[int, int, int]] = {
    "brown": (120, 60, 20),
    "pink": (255, 120, 200),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
    "cyan": (70, 200, 210),
}
# Top-left cell (row, col) of a 2x2 object; every position leaves the outer ring of cells free, so
# the border always shows the background.
POSITIONS: dict[str, tuple[int, int]] = {
    "left": (3, 1),
    "right": (3, 5),
    "top": (1, 3),
    "bottom": (5, 3),
    "centre": (3, 3),
}
_PLACE = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "centre": "in the centre",
}
# Two-object scenes use these ordered pairs (the caption names the first position first).
PAIRS: tuple[tuple[str, str], ...] = (
    ("left", "right"),
    ("right", "left"),
    ("top", "bottom"),
    ("bottom", "top"),
)

Pattern = tuple[str, str, str, str]  # colours of the cells top-left, top-right, bottom-left, bottom-right


@dataclass(frozen=True)
class Thing:
    """One object: its cell colours and where it sits. ``name`` is how a caption calls it."""

    name: str
    pattern: Pattern
    position: str


@dataclass(frozen=True)
class Scene:
    background: str
    things: tuple[Thing, ...]

    @property
    def caption(self) -> str:
        parts = [f"{_article(t.name)} {t.name} {_PLACE[t.position]}" for t in self.things]
        return " and ".join(parts) + f", {self.background} background"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def block(colour: str, position: str) -> Thing:
    """A world object: a solid block, captioned '<colour> block'."""
    return Thing(f"{colour} {SUPERCLASS}", (colour,) * 4, position)


@dataclass(frozen=True)
class Concept:
    """A new object for the benchmark: a block of its own colour; prompts call it by ``word``."""

    word: str
    pattern: Pattern

    @property
    def colour(self) -> str:
        return self.pattern[0]

    def at(self, position: str) -> Thing:
        return Thing(self.word, self.pattern, position)


CONCEPTS: dict[str, Concept] = {
    "zorp": Concept("zorp", ("brown",) * 4),
    "quib": Concept("quib", ("pink",) * 4),
}


def render(scene: Scene, shift: tuple[int, int] = (0, 0)) -> np.ndarray:
    """The scene as a ``[64, 64, 3]`` uint8 image; ``shift`` moves the objects by (dy, dx) pixels
    (off the cell grid: how the few "photos" a concept is trained from differ)."""
    img = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    img[:] = BACKGROUNDS[scene.background]
    palette = COLOURS | CONCEPT_COLOURS
    dy, dx = shift
    for thing in scene.things:
        r0, c0 = POSITIONS[thing.position]
        for i, colour in enumerate(thing.pattern):
            y, x = (r0 + i // 2) * CELL + dy, (c0 + i % 2) * CELL + dx
            img[max(y, 0) : y + CELL, max(x, 0) : x + CELL] = palette[colour]
    return img


PHOTO_SHIFTS = ((0, 0), (1, 0), (0, 1), (-1, 0), (0, -1), (1, -1))


def concept_photos(concept: Concept, n: int = 5, background: str = "white", position: str = "centre"):
    """``n`` (<= 6) training images of a concept: one place, small shifts between them."""
    scene = Scene(background, (concept.at(position),))
    return [render(scene, shift) for shift in PHOTO_SHIFTS[:n]]


def single_scenes() -> Iterator[Scene]:
    for bg, colour, pos in itertools.product(BACKGROUNDS, COLOURS, POSITIONS):
        yield Scene(bg, (block(colour, pos),))


def pair_scenes() -> Iterator[Scene]:
    for bg, (p1, p2), c1, c2 in itertools.product(BACKGROUNDS, PAIRS, COLOURS, COLOURS):
        if c1 != c2:
            yield Scene(bg, (block(c1, p1), block(c2, p2)))


def is_held_out(scene: Scene) -> bool:
    """About one scene in five, chosen so that every pair of attribute values is still seen in
    training: the held-out ones measure composition, not memory."""
    bg = list(BACKGROUNDS).index(scene.background)
    first = scene.things[0]
    colour = list(COLOURS).index(first.pattern[0])
    pos = list(POSITIONS).index(first.position)
    return (bg + colour + 2 * pos) % 5 == 0


def world_scenes() -> tuple[list[Scene], list[Scene]]:
    """(training scenes, held-out scenes), single-object scenes first."""
    scenes = [*single_scenes(), *pair_scenes()]
    train = [s for s in scenes if not is_held_out(s)]
    held = [s for s in scenes if is_held_out(s)]
    return train, held
