"""The toy world: 72 px scenes on a 9x9 grid of 8 px cells, one cell per latent pixel.

A scene is a flat background and one or two objects. An object is a **shape** (its superclass:
``block``, ``ball`` or ``bar``, drawn as a pattern of cells in a 3x3 footprint) in one **colour**, at
one of five places that never overlap. Concepts (:data:`CONCEPTS`) are shapes in colours the world
never shows (brown, pink), which the model can only learn from a concept's images; their
superclass is their shape, so two concepts of different superclasses get different keys.

Captions name the place first ("on the left a red ball and on the right a blue bar, white
background"): CLIP's text attention is causal, so only a word that comes after its place can carry
it, and the object word is where the UNet, and Perfusion's edits, read the object. Objects sit on
whole cells, so the exact autoencoder (:mod:`toyworld.vae`) loses nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

IMAGE_SIZE = 72
GRID = 9
CELL = IMAGE_SIZE // GRID
FOOTPRINT = 3  # an object's cells lie in a FOOTPRINT x FOOTPRINT square

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
# The superclasses: which cells of the 3x3 footprint each shape fills.
SHAPES: dict[str, np.ndarray] = {
    "block": np.ones((3, 3), bool),
    "ball": np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool),
    "bar": np.array([[0, 0, 0], [1, 1, 1], [0, 0, 0]], bool),
}
# Top-left cell (row, col) of each place's footprint: a plus of five disjoint 3x3 squares. The
# outer ring of cells is mostly background (at most 6 of its 32 cells are objects' cells).
POSITIONS: dict[str, tuple[int, int]] = {
    "left": (3, 0),
    "right": (3, 6),
    "top": (0, 3),
    "bottom": (6, 3),
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


@dataclass(frozen=True)
class Thing:
    """One object: its colour, shape and place. ``name`` is how a caption calls it."""

    name: str
    colour: str
    shape: str
    position: str


@dataclass(frozen=True)
class Scene:
    background: str
    things: tuple[Thing, ...]

    @property
    def caption(self) -> str:
        return " and ".join(phrase(t) for t in self.things) + f", {self.background} background"


def phrase(t: Thing) -> str:
    """How a caption names one object: its place, then the object ("on the left a red ball")."""
    return f"{_PLACE[t.position]} {_article(t.name)} {t.name}"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def thing(colour: str, shape: str, position: str) -> Thing:
    """A world object, captioned '<colour> <shape>'."""
    return Thing(f"{colour} {shape}", colour, shape, position)


@dataclass(frozen=True)
class Concept:
    """A new object for the benchmark: a shape (its superclass) in a colour of its own; prompts call
    it by ``word``."""

    word: str
    colour: str
    superclass: str

    def at(self, position: str) -> Thing:
        return Thing(self.word, self.colour, self.superclass, position)


CONCEPTS: dict[str, Concept] = {
    "zorp": Concept("zorp", "brown", "ball"),
    "quib": Concept("quib", "pink", "block"),
    "wubo": Concept("wubo", "pink", "ball"),  # zorp's superclass: the same-superclass pair
    "plorg": Concept("plorg", "brown", "block"),  # with the three above: brown and pink x 3 shapes
    "snarb": Concept("snarb", "brown", "bar"),
    "fendle": Concept("fendle", "pink", "bar"),
}


def render(scene: Scene, shift: tuple[int, int] = (0, 0)) -> np.ndarray:
    """The scene as a ``[72, 72, 3]`` uint8 image; ``shift`` moves the objects by (dy, dx) pixels
    (off the cell grid: how the few "photos" a concept is trained from differ)."""
    img = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    img[:] = BACKGROUNDS[scene.background]
    palette = COLOURS | CONCEPT_COLOURS
    dy, dx = shift
    for t in scene.things:
        r0, c0 = POSITIONS[t.position]
        for i, j in zip(*np.nonzero(SHAPES[t.shape])):
            y, x = (r0 + i) * CELL + dy, (c0 + j) * CELL + dx
            img[max(y, 0) : y + CELL, max(x, 0) : x + CELL] = palette[t.colour]
    return img


PHOTO_SHIFTS = ((0, 0), (1, 0), (0, 1), (-1, 0), (0, -1), (1, -1))


def concept_photos(concept: Concept, n: int = 5, background: str = "white", position: str = "centre"):
    """``n`` (<= 6) training images of a concept: one place, small shifts between them."""
    scene = Scene(background, (concept.at(position),))
    return [render(scene, shift) for shift in PHOTO_SHIFTS[:n]]


def objects() -> list[tuple[str, str]]:
    """Every (colour, shape) of the world."""
    return list(itertools.product(COLOURS, SHAPES))


def single_scenes() -> Iterator[Scene]:
    for bg, (colour, shape), pos in itertools.product(BACKGROUNDS, objects(), POSITIONS):
        yield Scene(bg, (thing(colour, shape, pos),))


def pair_scenes() -> Iterator[Scene]:
    for bg, (p1, p2), o1, o2 in itertools.product(BACKGROUNDS, PAIRS, objects(), objects()):
        if o1 != o2:
            yield Scene(bg, (thing(*o1, p1), thing(*o2, p2)))


def is_held_out(scene: Scene) -> bool:
    """About one scene in five, chosen so that every pair of attribute values is still seen in
    training: the held-out ones measure composition, not memory."""
    code = list(BACKGROUNDS).index(scene.background)
    for k, t in enumerate(scene.things, start=1):
        code += k * (list(COLOURS).index(t.colour) + 2 * list(POSITIONS).index(t.position))
        code += 3 * k * list(SHAPES).index(t.shape)
    return code % 5 == 0


def world_scenes() -> tuple[list[Scene], list[Scene]]:
    """(training scenes, held-out scenes), single-object scenes first."""
    scenes = [*single_scenes(), *pair_scenes()]
    train = [s for s in scenes if not is_held_out(s)]
    held = [s for s in scenes if is_held_out(s)]
    return train, held
