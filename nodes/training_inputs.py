"""What a user connects to the Train node, checked and brought to training's shape: the two words,
the images and their masks."""

from __future__ import annotations

import re

import torch

from ..perfusion_core.training import normalise_mask, square_resize
from . import text_encoder

_WORD = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def check_words(clip, word: str, superclass: str) -> None:
    """The concept word must be one new word; the superclass one vocabulary word (docs/method.md §5)."""
    if not _WORD.match(word or ""):
        raise ValueError(
            f"concept word '{word}': use one word of letters, digits or '_' starting with a letter "
            "(it must stay one token in prompts), e.g. 'hugsy'"
        )
    if text_encoder.is_vocabulary_word(clip, word):
        raise ValueError(
            f"concept word '{word}' is already a word of the text encoder's vocabulary: every prompt "
            "using it would change. Pick a made-up word such as 'hugsy' or 'zwx'"
        )
    if not _WORD.match(superclass or "") or not text_encoder.is_vocabulary_word(clip, superclass):
        raise ValueError(
            f"superclass word '{superclass}' must be one word of the text encoder's vocabulary "
            "(one token), e.g. 'teddy', 'dog', 'cat', 'mug'"
        )
    if word.lower() == superclass.lower():
        raise ValueError("the concept word and the superclass word must differ")


def _batches(value, what: str) -> list[torch.Tensor]:
    """An IMAGE/MASK input as a list of batches: one tensor, or a dataset node's list of them."""
    if value is None or isinstance(value, torch.Tensor):
        value = [] if value is None else [value]
    if what == "mask":
        value = [m[None] if m.ndim == 2 else m for m in value]
    return [b for b in value if b.shape[0] > 0]


def prepare_images(images, masks, resolution: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """IMAGE (N,H,W,3) and MASK (N,H,W) -> square (N,3,S,S) pixels and (N,1,S,S) weights.

    Each input may also be a list of batches (a dataset node's list, one image each, of any sizes):
    every image is centre-cropped to a square and resized to S on its own, as a single batch is, so
    images of different sizes train together."""
    batches = _batches(images, "images")
    if not batches or any(b.ndim != 4 for b in batches):
        raise ValueError("images: connect at least one training image")
    pixels = torch.cat([square_resize(b.movedim(-1, 1)[:, :3], resolution) for b in batches])
    if masks is None:
        return pixels, None
    mask_batches = _batches(masks, "mask")
    n_masks = sum(m.shape[0] for m in mask_batches)
    if n_masks != pixels.shape[0]:
        raise ValueError(f"mask: {n_masks} masks for {pixels.shape[0]} images; give one mask per image")
    image_sizes = [tuple(b.shape[1:3]) for b in batches for _ in range(b.shape[0])]
    mask_sizes = [tuple(m.shape[1:]) for m in mask_batches for _ in range(m.shape[0])]
    for k, (got, want) in enumerate(zip(mask_sizes, image_sizes, strict=True)):
        if got != want:
            which = "the images'" if len(batches) == 1 else f"image {k + 1}'s"
            raise ValueError(f"mask: size {got} differs from {which} {want}")
    weights = torch.cat([square_resize(m[:, None], resolution) for m in mask_batches])
    return pixels, normalise_mask(weights.clamp(0, 1))
