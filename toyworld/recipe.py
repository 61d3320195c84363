"""How toy-world concepts are trained: one recipe for the demo, the quality benchmark and the tests.

The 5 training images show the object in the centre of a white background (small shifts between
them), and every training prompt says so: whatever else a sample shows (another place, another
background, another block) has to come from the prompt, which is what alignment measures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from harness.perfusion_graphs import train_prompt

from . import world

TEMPLATE = "in the centre a {}, white background"
SUGGESTED_BIAS = 0.7  # measured on the quality benchmark: benchmarks/README.md "Quality"


@dataclass(frozen=True)
class Recipe:
    """Training settings (the LoRA baseline gets the same image-steps at batch 1)."""

    steps: int = 150
    batch_size: int = 4
    lr_v: float = 0.05
    lr_embedding: float = 0.01
    covariance_prompts: int = 256
    lora_rank: int = 8
    lora_lr: float = 0.001


def write_photos(folder: Path, concept: world.Concept, prefix: str = "toyworld") -> list[str]:
    """The concept's training images as PNGs in ``folder`` (ComfyUI's input folder); their names."""
    names = []
    for i, img in enumerate(world.concept_photos(concept)):
        name = f"{prefix}_{concept.word}_{i}.png"
        Image.fromarray(img).save(folder / name)
        names.append(name)
    return names


def train_graph(
    ckpt: str,
    names: Sequence[str],
    concept: world.Concept,
    recipe: Recipe,
    save_name: str,
    *,
    lr_v: float | None = None,
    **extra,
) -> dict:
    """Checkpoint -> photos -> PerfusionTrainConcept -> Save (node ids as :func:`train_prompt`)."""
    return train_prompt(
        ckpt,
        names,
        word=concept.word,
        superclass=concept.superclass,
        steps=recipe.steps,
        batch_size=recipe.batch_size,
        lr_v=recipe.lr_v if lr_v is None else lr_v,
        lr_embedding=recipe.lr_embedding,
        resolution=world.IMAGE_SIZE,
        templates=TEMPLATE,
        covariance_prompts=recipe.covariance_prompts,
        save_name=save_name,
        extra={"flip": False, **extra},
    )
