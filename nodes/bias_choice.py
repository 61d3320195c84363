"""Choosing a concept's suggested bias by sampling it (host glue for perfusion_core.operating_point):
the same seeds across a bias grid, and with the superclass word, scored by the user's CLIP vision
image tower; the chosen bias is written into the concept's suggested settings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import comfy.model_management
import comfy.utils
import torch

from ..perfusion_core.concept import Concept
from ..perfusion_core.defaults import INFERENCE_TEMPERATURE
from ..perfusion_core.operating_point import (
    GRID,
    ImageEmbedder,
    OperatingCurve,
    bias_grid,
    score_curve,
)
from .apply import apply_concept
from .sampling import Sampling, encode, sample_image


@dataclass(frozen=True)
class BiasSearch:
    """What the chooser samples: a bias grid, seeds, one prompt ('{}' = the word), the sampler."""

    bias_min: float = GRID[0]
    bias_max: float = GRID[1]
    bias_step: float = GRID[2]
    seeds: int = 4
    seed: int = 0  # the first seed; the others follow it
    prompt: str = "a photo of a {}"
    temperature: float = INFERENCE_TEMPERATURE
    key_lock: str = "local"
    sampling: Sampling = Sampling(size=512, steps=20)

    @property
    def grid(self) -> tuple[float, ...]:
        return bias_grid(self.bias_min, self.bias_max, self.bias_step)

    def check(self) -> None:
        """Raises naming the widget when the grid, the prompt or the key lock cannot be used."""
        bias_grid(self.bias_min, self.bias_max, self.bias_step)
        if "{}" not in self.prompt:
            raise ValueError(f"prompt: '{self.prompt}' has no '{{}}' where the concept word goes")
        if self.key_lock not in ("local", "global"):
            raise ValueError(f"key_lock must be local or global, got '{self.key_lock}'")


def clip_vision_embedder(clip_vision) -> ImageEmbedder:
    """The image tower's projected embedding (CLIP Vision Encode's `image_embeds`), one per image."""

    def embed(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat(
                [clip_vision.encode_image(img[None]).image_embeds.float().cpu() for img in images]
            )

    return embed


def _as_batch(images: Sequence[torch.Tensor] | torch.Tensor) -> list[torch.Tensor]:
    """Single images (H, W, 3) from one IMAGE batch or a list of them (sizes may differ)."""
    batches = [images] if isinstance(images, torch.Tensor) else list(images)
    return [img for batch in batches for img in batch]


def sample_curve(
    model, clip, vae, concept: Concept, references, embed: ImageEmbedder, search: BiasSearch
) -> tuple[OperatingCurve, torch.Tensor]:
    """The scored curve and its samples, (biases + 1) x seeds images, the superclass row first."""
    search.check()
    grid = search.grid
    seeds = [search.seed + k for k in range(search.seeds)]
    progress = comfy.utils.ProgressBar(len(seeds) * (len(grid) + 1))

    def row(patched, patched_clip, word: str) -> torch.Tensor:
        positive = encode(patched_clip, search.prompt.replace("{}", word))
        negative = encode(patched_clip, "")
        images = []
        for seed in seeds:
            comfy.model_management.throw_exception_if_processing_interrupted()
            images.append(sample_image(patched, vae, positive, negative, seed, search.sampling))
            progress.update(1)
        return torch.cat(images)

    with torch.no_grad():
        rows = [row(model, clip, concept.info.superclass)]
        for bias in grid:
            source = f"concept '{concept.word}' at bias {bias:g}"
            patched, patched_clip = apply_concept(
                model, clip, concept, bias, search.temperature, search.key_lock, source=source
            )
            rows.append(row(patched, patched_clip, concept.word))
    embeddings = [embed(r) for r in rows]
    refs = torch.cat([embed(img[None].float()) for img in _as_batch(references)])
    curve = score_curve(grid, torch.stack(embeddings[1:]), embeddings[0], refs)
    return curve, torch.cat(rows)


def with_suggested_bias(concept: Concept, bias: float, search: BiasSearch) -> Concept:
    """The concept with `bias` (and the chooser's temperature) as its suggestion for the key lock used,
    and how it was chosen in its training settings (`suggested_bias_<lock>`), so a file tells a chosen
    bias from the class default."""
    field = "suggested_beta_local" if search.key_lock == "local" else "suggested_beta_global"
    grid = search.grid
    how = (
        f"chosen from images: biases {grid[0]:g}-{grid[-1]:g} step {search.bias_step:g}, {search.seeds} seeds, "
        f"'{search.prompt}', CLIP vision"
    )
    settings = {**concept.info.training_settings, f"suggested_bias_{search.key_lock}": how}
    info = replace(
        concept.info,
        **{field: float(bias), "suggested_tau": float(search.temperature), "training_settings": settings},
    )
    return replace(concept, info=info)
