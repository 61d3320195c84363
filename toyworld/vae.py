"""An exact autoencoder in ComfyUI's TAESD layout: 8x8 average pooling in, nearest upsampling out.

The toy world draws objects on whole 8 px cells, so averaging each cell loses nothing and the decoder
returns the scene exactly. A learnt autoencoder was the weak link of the feasibility prototype (shape
at chance, colour 77 % after 10 minutes of training); this one is set by hand, so every error a
scorer finds comes from the UNet or the concept, never from the VAE.

Latents: channels 0-2 hold each cell's RGB mapped to [-1, 1] as the UNet sees them (ComfyUI feeds
the UNet ``0.18215 * (encoder(x) / vae_scale + vae_shift)``); channel 3 is always 0. The decoder's
input goes through TAESD's ``tanh(x / 3) * 3`` clamp, so the encoder keeps its output within ±0.15,
where that clamp is the identity to within 0.1 %.
"""

from __future__ import annotations

import torch

_SPAN = 0.15  # encoder output = _SPAN * (2 * cell_rgb - 1)
_SD15_SCALE = 0.18215
VAE_SCALE = _SPAN * _SD15_SCALE  # latent the UNet sees = 2 * rgb - 1
_WIDTH = 64


def _identity_conv(n_out: int, n_in: int, scale: float = 1.0) -> torch.Tensor:
    w = torch.zeros(n_out, n_in, 3, 3)
    for c in range(min(n_in, n_out, 3)):
        w[c, c, 1, 1] = scale
    return w


def _average_2x2() -> torch.Tensor:
    """A stride-2, padding-1 3x3 convolution whose taps (1..2, 1..2) average each 2x2 patch."""
    w = torch.zeros(_WIDTH, _WIDTH, 3, 3)
    for c in range(3):
        w[c, c, 1:3, 1:3] = 0.25
    return w


def _pass_through_block(prefix: str, sd: dict[str, torch.Tensor]) -> None:
    """A TAESD Block whose convolutions output 0: the block is its skip (ReLU of non-negative x)."""
    for i in (0, 2, 4):
        sd[f"{prefix}.conv.{i}.weight"] = torch.zeros(_WIDTH, _WIDTH, 3, 3)
        sd[f"{prefix}.conv.{i}.bias"] = torch.zeros(_WIDTH)


def state_dict() -> dict[str, torch.Tensor]:
    """TAESD weights (keys as in ``comfy.taesd.taesd.TAESD``), fp32."""
    sd: dict[str, torch.Tensor] = {}
    enc = "taesd_encoder"
    sd[f"{enc}.0.weight"] = _identity_conv(_WIDTH, 3)
    sd[f"{enc}.0.bias"] = torch.zeros(_WIDTH)
    for i in (1, 3, 4, 5, 7, 8, 9, 11, 12, 13):
        _pass_through_block(f"{enc}.{i}", sd)
    for i in (2, 6, 10):
        sd[f"{enc}.{i}.weight"] = _average_2x2()
    sd[f"{enc}.14.weight"] = _identity_conv(4, _WIDTH, 2 * _SPAN)
    sd[f"{enc}.14.bias"] = torch.tensor([-_SPAN] * 3 + [0.0])

    dec = "taesd_decoder"
    # Input e = _SPAN * (2 rgb - 1) -> rgb = e / (2 _SPAN) + 0.5, non-negative, so ReLU passes it.
    sd[f"{dec}.1.weight"] = _identity_conv(_WIDTH, 4, 1 / (2 * _SPAN))
    sd[f"{dec}.1.bias"] = torch.tensor([0.5] * 3 + [0.0] * (_WIDTH - 3))
    for i in (3, 4, 5, 8, 9, 10, 13, 14, 15, 18):
        _pass_through_block(f"{dec}.{i}", sd)
    for i in (7, 12, 17):
        sd[f"{dec}.{i}.weight"] = _identity_conv(_WIDTH, _WIDTH)
    sd[f"{dec}.19.weight"] = _identity_conv(3, _WIDTH)
    sd[f"{dec}.19.bias"] = torch.zeros(3)
    sd["vae_scale"] = torch.tensor(VAE_SCALE)
    sd["vae_shift"] = torch.tensor(0.0)
    return sd


def latents(images: torch.Tensor) -> torch.Tensor:
    """What the UNet sees for ``[B, H, W, 3]`` images in [0, 1]: ``[B, 4, H/8, W/8]`` in [-1, 1]."""
    cells = torch.nn.functional.avg_pool2d(images.movedim(-1, 1).float(), 8)
    return torch.cat([cells * 2 - 1, torch.zeros_like(cells[:, :1])], dim=1)
