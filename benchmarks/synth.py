"""Synthetic files for benchmarking: Perfusion concepts, a rank-16 LoRA and a textual-inversion embedding.

Random weights are enough to time things (the gate's value does not change the work done). Concepts use
the model's own layer names and widths, so the real loader accepts them; u = i* (C = identity) keeps
i*ᵀ u > 0.
"""

from __future__ import annotations

from pathlib import Path

import safetensors.torch
import torch

ENCODER_WIDTH = 768


def concept_words(count: int) -> list[str]:
    """Made-up words ("bxqa", "bxqb", ...), one per concept."""
    return [f"bxq{chr(ord('a') + i)}" for i in range(count)]


def write_concepts(pack, model, clip, folder: Path, count: int, seed: int = 0) -> list[str]:
    """`count` concept files for `model`/`clip` (any family: their layers, encoders and fingerprint,
    so the real loader takes them) in `folder`; returns the file names. `pack` is the pack's package
    as the host imported it."""
    concept_mod, text_encoder = pack.perfusion_core.concept, pack.nodes.text_encoder
    layers = pack.nodes.model_patch.cross_attention_layers(model)
    width = text_encoder.encoder_width(clip)
    info = {
        "superclass": "teddy",
        "model_family": type(model.model.model_config).__name__,
        "encoder_fingerprint": text_encoder.encoder_fingerprint(clip),
        "clip_layer": text_encoder.encoder_layer(clip),
        "text_encoders": text_encoder.encoder_layout(clip),
    }
    generator = torch.Generator().manual_seed(seed)
    names = []
    for word in concept_words(count):

        def vec(n: int) -> torch.Tensor:
            return torch.randn(n, generator=generator)

        i_star = vec(width)
        concept = concept_mod.Concept(
            info=concept_mod.ConceptInfo(word=word, **info),
            token_embedding=vec(width) * 0.01,
            i_star=i_star,
            u=i_star.clone(),
            superclass_encoding=vec(width),
            v_targets={layer.name: vec(layer.width) for layer in layers},
        )
        name = f"bench_{word}.safetensors"
        pack.perfusion_core.concept_writer.save_concept(concept, folder / name, overwrite=True)
        names.append(name)
    return names


def lora_targets(model) -> dict[str, tuple[int, int]]:
    """Linear weights of the UNet's transformer blocks (attention q/k/v/out and feed-forward), the layers a
    typical SD1.5 LoRA trains: ComfyUI key prefix ("lora_unet_...") -> (out, in)."""
    targets = {}
    for key, tensor in model.model.state_dict().items():
        if not key.startswith("diffusion_model.") or not key.endswith(".weight"):
            continue
        if ".transformer_blocks." not in key or tensor.ndim != 2:
            continue
        module = key[len("diffusion_model.") : -len(".weight")]
        targets["lora_unet_" + module.replace(".", "_")] = (int(tensor.shape[0]), int(tensor.shape[1]))
    return targets


def write_lora(model, path: Path, rank: int = 16, seed: int = 0) -> int:
    """A random rank-`rank` LoRA in ComfyUI's "lora_unet_*" key format (fp16, like shared LoRAs);
    returns the number of patched weights."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    targets = lora_targets(model)
    for prefix, (out_dim, in_dim) in targets.items():
        tensors[f"{prefix}.lora_down.weight"] = (torch.randn(rank, in_dim, generator=generator) * 0.01).half()
        tensors[f"{prefix}.lora_up.weight"] = (torch.randn(out_dim, rank, generator=generator) * 0.01).half()
        tensors[f"{prefix}.alpha"] = torch.tensor(float(rank)).half()
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(tensors, str(path))
    return len(targets)


def write_embedding(path: Path, seed: int = 0) -> None:
    """A one-vector textual-inversion embedding as ComfyUI reads it ("emb_params", fp32)."""
    generator = torch.Generator().manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file({"emb_params": torch.randn(1, ENCODER_WIDTH, generator=generator)}, str(path))
