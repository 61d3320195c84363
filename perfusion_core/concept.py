"""What one trained concept holds, independent of how it is stored or applied."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .defaults import (
    INFERENCE_BIAS,
    INFERENCE_BIAS_GLOBAL,
    INFERENCE_TEMPERATURE,
    TRAIN_BIAS,
    TRAIN_TEMPERATURE,
)

FORMAT_VERSION = "2"  # 2: the word embedding may span several text encoders (SDXL)


@dataclass(frozen=True)
class ConceptInfo:
    """Descriptive fields that travel with a concept (the file's metadata, docs/method.md §7)."""

    word: str
    superclass: str
    model_family: str
    encoder_fingerprint: str
    train_beta: float = TRAIN_BIAS
    train_tau: float = TRAIN_TEMPERATURE
    suggested_beta_local: float = INFERENCE_BIAS
    suggested_beta_global: float = INFERENCE_BIAS_GLOBAL
    suggested_tau: float = INFERENCE_TEMPERATURE
    steps: int = 0
    training_settings: dict[str, str] = field(default_factory=dict)
    # The text-encoder layer the concept was trained on, counted as CLIP Set Last Layer counts
    # (-1 = last, -2 = penultimate). None = unknown (files written before it was recorded): the
    # gate only recognises encodings of the trained layer, but guessing would refuse good files.
    clip_layer: int | None = None
    # The text encoders the word embedding spans, in order: ((key, width), ...), e.g. (("l", 768),
    # ("g", 1280)) on SDXL. None = a format-1 file: one encoder, as wide as the embedding.
    text_encoders: tuple[tuple[str, int], ...] | None = None
    # How many images the last training run learnt from. None = unknown (files written before).
    training_images: int | None = None


@dataclass(frozen=True)
class Concept:
    """A Perfusion concept (docs/method.md §3, §7).

    `v_targets` maps each cross-attention layer name (as found in the model, e.g.
    ``diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2``) to its V target o*_V.
    K targets are not stored: they are W_K · superclass_encoding, taken from the model they are
    applied to, so they stay exact for that model (and any LoRA on it).
    """

    info: ConceptInfo
    token_embedding: torch.Tensor  # (D,) learned input embedding(s) of the concept word, concatenated
    i_star: torch.Tensor  # (D,) target input: EMA of the concept token's encoding
    u: torch.Tensor  # (D,) C⁻¹ i*, so inference needs no covariance
    superclass_encoding: torch.Tensor  # (D,) mean encoding of the superclass word (key lock)
    v_targets: dict[str, torch.Tensor]  # layer -> (d,)

    @property
    def word(self) -> str:
        return self.info.word

    @property
    def encoder_width(self) -> int:
        return int(self.i_star.shape[0])

    @property
    def layer_widths(self) -> dict[str, int]:
        return {name: int(t.shape[0]) for name, t in self.v_targets.items()}
