"""Discovery of cross-attention layers from a loaded denoiser (never a hard-coded list, docs/method.md §1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CrossAttentionLayer:
    """One cross-attention block: where its K/V projections live and their widths."""

    name: str  # module path of the attention block, e.g. "diffusion_model....attn2"
    width: int  # output width d of to_k / to_v
    context_dim: int  # input width D (the text encoder's width)

    @property
    def key_path(self) -> str:
        return f"{self.name}.to_k"

    @property
    def value_path(self) -> str:
        return f"{self.name}.to_v"


def find_cross_attention_layers(model: torch.nn.Module, suffix: str = "attn2") -> list[CrossAttentionLayer]:
    """Every `*.attn2` module with `to_k`/`to_v` linears, in module order."""
    layers = []
    for name, module in model.named_modules():
        if not name.endswith(suffix):
            continue
        to_k, to_v = getattr(module, "to_k", None), getattr(module, "to_v", None)
        if to_k is None or to_v is None:
            continue
        out_k, in_k = to_k.weight.shape
        if tuple(to_v.weight.shape) != (out_k, in_k):
            continue
        layers.append(CrossAttentionLayer(name=name, width=int(out_k), context_dim=int(in_k)))
    return layers
