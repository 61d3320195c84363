"""C⁻¹ of a text encoder's encodings: computed once per base model, cached on disk (docs/method.md §6)."""

from __future__ import annotations

import logging
import os

import comfy.model_management
import comfy.utils
import folder_paths
import torch

from ..perfusion_core.covariance import CovarianceCache, cache_key, compute_inverse_covariance
from ..perfusion_core.prompt_corpus import CORPUS_VERSION, prompt_corpus
from . import text_encoder

log = logging.getLogger("comfyui-perfusion")


def cache_directory() -> str:
    """In the user directory, not models/perfusion: cache files must not appear as concepts."""
    return os.path.join(folder_paths.get_user_directory(), "perfusion", "covariance")


def encode_batch(clip, prompts: list[str]) -> torch.Tensor:
    """Per-token encodings (B·chunks, T, D) the denoiser would see for `prompts`, in one pass."""
    batched: dict[str, list] = {}
    for prompt in prompts:
        for key, chunks in text_encoder.tokenize_unweighted(clip, prompt).items():
            batched.setdefault(key, []).extend(chunks)
    cond = clip.encode_from_tokens(batched)
    return cond.reshape(len(next(iter(batched.values()))), -1, cond.shape[-1])


def inverse_covariance(clip, n_prompts: int) -> torch.Tensor:
    """C⁻¹ (D×D, float64 on the CPU) for this CLIP, from the cache when it has it."""
    fingerprint = text_encoder.encoder_fingerprint(clip)
    # The effective layer: CLIP Set Last Layer -1 and the default encode alike, so they share C.
    key = cache_key(f"{fingerprint}-layer{text_encoder.encoder_layer(clip)}", CORPUS_VERSION, n_prompts)
    cache = CovarianceCache(cache_directory())
    width = text_encoder.encoder_width(clip)
    cached = cache.get(key, expected_dim=width)
    if cached is not None:
        return cached
    log.info("Perfusion: computing the text-encoding covariance over %d prompts (once per model)", n_prompts)
    bar = comfy.utils.ProgressBar(n_prompts)
    c_inv = compute_inverse_covariance(
        lambda batch: encode_batch(clip, batch).float(),
        prompt_corpus(n_prompts),
        progress=lambda done, total: bar.update_absolute(done, total),
        should_stop=comfy.model_management.throw_exception_if_processing_interrupted,
        device=comfy.model_management.get_torch_device(),
    )
    cache.put(key, c_inv, {"encoder_fingerprint": fingerprint, "prompts": str(n_prompts)})
    return c_inv
