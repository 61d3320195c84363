"""The toy world: 72 px scenes on a 9x9 grid of 8 px cells, one cell per latent pixel.

A scene is a flat background and one or two objects. An object is named by one **noun** that fixes
its look, as a noun does in real captions ("brick": a red block, "lime": a green ball): a **shape**
(``block``, ``ball`` or ``bar``, drawn as a pattern of cells in a 3x3 footprint) in one **colour**, at
one of five places that never overlap. So the UNet learns to read an object's look from its noun,
which is the word Perfusion edits. Concepts (:data:`CONCEPTS`) are shapes in colours the world never
shows (brown, pink); their superclass is a noun of the same shape ("cherry" for a brown ball).

Captions are five slots in a fixed order, then the background ("top empty, left brick, centre
empty, right lime, bottom empty, white background"): every place's noun sits at the same token in
every caption, so the UNet can tell which object goes where by the token alone, which is what binds
two objects (captions that named the place before each object bound 20 % of pairs; README, "The toy
world"). Objects sit on whole cells, so the exact autoencoder (:mod:`toyworld.vae`) loses nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
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
# The caption's slots, in order: each place's word, then what is there (a noun, or EMPTY).
SLOTS: tuple[str, ...] = ("top", "left", "centre", "right", "bottom")
EMPTY = "empty"
# Two-object scenes: every pair of places (they never overlap).
PAIRS: tuple[tuple[str, str], ...] = tuple(itertools.combinations(SLOTS, 2))
# Every world object has a noun of its own (one CLIP token each; a random CLIP-L gives the words no
# meaning, the world does): (colour, shape).
NOUNS: dict[str, tuple[str, str]] = {
    "brick": ("red", "block"),
    "cherry": ("red", "ball"),
    "chili": ("red", "bar"),
    "cactus": ("green", "block"),
    "lime": ("green", "ball"),
    "pickle": ("green", "bar"),
    "crate": ("blue", "block"),
    "marble": ("blue", "ball"),
    "pencil": ("blue", "bar"),
    "cheese": ("yellow", "block"),
    "lemon": ("yellow", "ball"),
    "banana": ("yellow", "bar"),
}


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
        return caption(self.background, **{t.position: t.name for t in self.things})


def caption(background: str, **names: str) -> str:
    """The caption of a background and the names at some places, e.g. ``caption("white",
    centre="{}")`` is a training template."""
    unknown = set(names) - set(SLOTS)
    if unknown:
        raise ValueError(f"no such place {sorted(unknown)}; places are {list(SLOTS)}")
    slots = ", ".join(f"{place} {names.get(place, EMPTY)}" for place in SLOTS)
    return f"{slots}, {background} background"


def noun(colour: str, shape: str) -> str:
    """The world's noun for a colour and shape."""
    for word, look in NOUNS.items():
        if look == (colour, shape):
            return word
    raise KeyError(f"the world has no {colour} {shape}")


def thing(colour: str, shape: str, position: str) -> Thing:
    """A world object, called by its noun."""
    return Thing(noun(colour, shape), colour, shape, position)


@dataclass(frozen=True)
class Concept:
    """A new object for the benchmark: a shape in a colour of its own; prompts call it by ``word``,
    and its superclass is a world noun of the same shape."""

    word: str
    colour: str
    superclass: str

    @property
    def shape(self) -> str:
        return NOUNS[self.superclass][1]

    def at(self, position: str) -> Thing:
        return Thing(self.word, self.colour, self.shape, position)


CONCEPTS: dict[str, Concept] = {
    "zorp": Concept("zorp", "brown", "cherry"),
    "quib": Concept("quib", "pink", "brick"),
    "wubo": Concept("wubo", "pink", "cherry"),  # zorp's superclass: the same-superclass pair
    "plorg": Concept("plorg", "brown", "brick"),  # with the three above: brown and pink x 3 shapes
    "snarb": Concept("snarb", "brown", "chili"),
    "fendle": Concept("fendle", "pink", "chili"),
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


PHOTO_PLACES = ("centre", "top", "left", "centre", "top", "left")


def concept_photos(
    concept: Concept, n: int = 5, background: str = "white", places: Sequence[str] = PHOTO_PLACES
) -> list[tuple[np.ndarray, str]]:
    """``n`` (<= 6) training photos of a concept, each with its caption: three places, small shifts.
    Photos at one place would pin the concept there: a slot's place reaches the UNet through its
    noun's own values, so a V target trained at one place carries that place (README, "The toy
    world")."""
    scenes = [(Scene(background, (concept.at(p),)), shift) for p, shift in zip(places[:n], PHOTO_SHIFTS)]
    return [(render(scene, shift), scene.caption) for scene, shift in scenes]


def objects() -> list[tuple[str, str]]:
    """Every (colour, shape) of the world, in the order of :data:`NOUNS`."""
    return list(NOUNS.values())


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
