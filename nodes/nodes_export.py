"""Export node: a concept as files stock ComfyUI and A1111/Forge load without this pack, a
textual-inversion embedding and an ungated rank-1 LoRA (the approximation: perfusion_core.export)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import comfy.lora
import comfy.utils
import safetensors.torch
import torch

from ..perfusion_core.atomic_write import UnwritableFile, write_atomic
from ..perfusion_core.export import embedding_tensors, rank1_updates
from . import folders
from .host_support import require_host
from .nodes_loader import CONCEPT_TYPE

log = logging.getLogger("comfyui-perfusion")
_UNET = "diffusion_model."


def projection_weights(model, layers) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(W_K, W_V) of each named cross-attention layer, as the loaded model holds them."""
    weights = {}
    for layer in layers:
        try:
            block = comfy.utils.get_attr(model.model, layer)
        except AttributeError:
            continue
        weights[layer] = tuple(p.weight.detach().to("cpu", torch.float32) for p in (block.to_k, block.to_v))
    return weights


def lora_names(model, paths) -> dict[str, str]:
    """The LoRA name of each projection (``diffusion_model.<...>.to_v``): kohya's diffusers-style
    name, which A1111/Forge also read, where the host can map it, else ComfyUI's own. Refuses a name
    the host's LoraLoader would not map, so a file it writes never loads as a silent no-op."""
    diffusers = {}
    to_diffusers = getattr(comfy.utils, "unet_to_diffusers", None)
    if to_diffusers is not None:
        for name, unet_key in to_diffusers(model.model.model_config.unet_config).items():
            diffusers[unet_key] = "lora_unet_" + name[: -len(".weight")].replace(".", "_")
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    names = {}
    for path in paths:
        own = path[len(_UNET) :]
        name = diffusers.get(own + ".weight") or "lora_unet_" + own.replace(".", "_")
        if key_map.get(name) != path + ".weight":
            raise ValueError(
                f"this ComfyUI maps no LoRA key to {path}: the concept cannot be exported as a LoRA"
            )
        names[path] = name
    return names


class PerfusionExportConcept:
    DESCRIPTION = (
        "Writes a concept for use without this pack: its word as a textual-inversion embedding "
        "(models/embeddings/<name>.safetensors: write embedding:<name> in a prompt) and its K and V edits "
        "as a rank-1 LoRA (models/loras/<name>.safetensors, for Load LoRA; also read by A1111/Forge). "
        "The LoRA has no gate: words resembling the concept word (its superclass most) take part of its "
        "identity, and the key lock is the local one. Use the pack's loader for the exact edit."
    )
    CATEGORY = "perfusion"
    FUNCTION = "export"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("lora_name", "embedding_prompt")
    OUTPUT_TOOLTIPS = ("The LoRA file for Load LoRA.", "What to write in a prompt: embedding:<name>.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (
                    "MODEL",
                    {"tooltip": "The model the concept was trained for: the LoRA holds its weights' share."},
                ),
                "concept": (CONCEPT_TYPE, {"tooltip": "The concept to export."}),
                "name": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "File name of both files (no folders); empty: <concept word>_perfusion, so "
                        "embedding:<name> is never the concept word itself.",
                    },
                ),
                "overwrite": (
                    "BOOLEAN",
                    {"default": False, "tooltip": "Replace existing files of that name."},
                ),
            }
        }

    def export(self, model, concept, name, overwrite):
        require_host()
        name = name.strip() or f"{concept.word}_perfusion"
        lora_path = Path(folders.new_file("loras", name, "name"))
        embedding_path = Path(folders.new_file("embeddings", name, "name"))
        if not overwrite:
            for path in (lora_path, embedding_path):
                if os.path.lexists(path):
                    raise folders.name_taken(name, path)
        updates = rank1_updates(concept, projection_weights(model, concept.v_targets))
        names = lora_names(model, updates)
        lora = {}
        for path, (up, down) in updates.items():
            lora[f"{names[path]}.lora_up.weight"] = up.reshape(-1, 1).to(torch.float16)
            lora[f"{names[path]}.lora_down.weight"] = down.reshape(1, -1).to(torch.float16)
            lora[f"{names[path]}.alpha"] = torch.tensor(1.0)
        meta = {"ss_network_dim": "1", "ss_network_alpha": "1", "perfusion_concept": concept.word}
        files = (
            (lora_path, safetensors.torch.save(lora, metadata=meta)),
            (embedding_path, safetensors.torch.save(embedding_tensors(concept))),
        )
        for path, data in files:
            try:
                write_atomic(data, path, overwrite=overwrite, what="file")
            except UnwritableFile as e:
                raise ValueError(f"name '{name}': {path} cannot be written: {e.defect}") from None
        log.info("Perfusion: exported '%s' to %s and %s", concept.word, lora_path, embedding_path)
        prompt = f"embedding:{name}"
        return {
            "ui": {"text": [f"wrote {lora_path} and {embedding_path}; prompt with {prompt}"]},
            "result": (lora_path.name, prompt),
        }
