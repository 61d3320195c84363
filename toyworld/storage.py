"""The committed weights in 8 bits: half the bytes of fp16, so the whole tracked tree stays small
enough to travel with every call to a lent GPU machine (64 MiB, of which the device kit needs 13).

Each matrix or convolution is stored as int8 rows with one fp16 scale per output row (symmetric,
round to nearest): a relative error of at most 1/254 of the row's largest weight. Vectors (biases,
norms) stay fp16. :func:`unpack` gives back fp16 tensors, which is what the packed checkpoint holds.
"""

from __future__ import annotations

import torch

SCALE = ".int8_scale"


def pack(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        t = t.detach().float().cpu()
        if t.ndim < 2:
            out[name] = t.to(torch.float16).contiguous()
            continue
        scale = t.abs().amax(dim=tuple(range(1, t.ndim)), keepdim=True).clamp(min=1e-4) / 127
        scale = scale.to(torch.float16).float()  # quantise against the scale that is stored
        out[name] = (t / scale).round().clamp(-127, 127).to(torch.int8).contiguous()
        out[name + SCALE] = scale.to(torch.float16).contiguous()
    return out


def unpack(stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, t in stored.items():
        if name.endswith(SCALE):
            continue
        if t.dtype == torch.int8:
            t = t.float() * stored[name + SCALE].float()
        out[name] = t.to(torch.float16)
    return out
