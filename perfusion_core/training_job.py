"""What one training run is asked to do, apart from the host's models (MODEL, CLIP, VAE).

One object that the Train node, the benchmarks and the tests all build, so a run's inputs are named
fields with their defaults written once, and a study can hand in its own C⁻¹ instead of patching
the cache the trainer reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .concept import Concept
from .defaults import COVARIANCE_PROMPTS
from .training import TrainingConfig

# An IMAGE (N, H, W, 3) or MASK (N, H, W) batch, or a dataset node's list of such batches.
Batches = torch.Tensor | Sequence[torch.Tensor]


@dataclass(frozen=True, eq=False)
class TrainingJob:
    """The concept's words, its images and settings, where training starts and how it runs."""

    word: str  # the new word the concept is learnt as
    superclass: str  # the vocabulary word the keys lock to
    images: Batches
    config: TrainingConfig
    masks: Batches | None = None  # one per image: weights of the loss (zero-shot mask)
    resume: Concept | None = None  # continue training this concept instead of starting anew
    covariance_prompts: int = COVARIANCE_PROMPTS  # C is estimated from this many prompts (cached)...
    c_inv: torch.Tensor | None = None  # ... unless its inverse (D × D) is given here
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, slower
    precision: str = "auto"  # the dtype the denoiser computes in: a name of nodes.precision.PRECISIONS
