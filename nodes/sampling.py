"""One image as KSampler + VAEDecode make it, for nodes that sample inside their own run (training
previews, the bias chooser): the host's own sampler, from an empty latent."""

from __future__ import annotations

from dataclasses import dataclass

import comfy.model_management
import comfy.sample
import torch

SAMPLER, SCHEDULER, CFG = "euler", "normal", 6.0


@dataclass(frozen=True)
class Sampling:
    size: int  # pixels (square)
    steps: int
    cfg: float = CFG
    sampler: str = SAMPLER
    scheduler: str = SCHEDULER


def encode(clip, text: str):
    """CLIPTextEncode's conditioning."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def sample_image(model, vae, positive, negative, seed: int, sampling: Sampling) -> torch.Tensor:
    """One image from an empty latent: (1, S, S, 3) on the CPU."""
    size = sampling.size
    latent = torch.zeros([1, 4, size // 8, size // 8], device=comfy.model_management.intermediate_device())
    latent = comfy.sample.fix_empty_latent_channels(model, latent)
    noise = comfy.sample.prepare_noise(latent, seed)
    samples = comfy.sample.sample(
        model,
        noise,
        sampling.steps,
        sampling.cfg,
        sampling.sampler,
        sampling.scheduler,
        positive,
        negative,
        latent,
        denoise=1.0,
        disable_pbar=True,
        seed=seed,
    )
    images = vae.decode(samples)
    if images.ndim == 5:  # as VAEDecode does for video VAEs
        images = images.reshape(-1, *images.shape[-3:])
    return images.float().cpu()
