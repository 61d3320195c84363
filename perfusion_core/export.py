"""A concept in formats other tools read: its word as a textual-inversion embedding, and its edits as
an ungated rank-1 LoRA.

The LoRA is the gated edit with the gate g(e) replaced by r(e) = eᵀu / (i*ᵀu), the ROME form of the
same edit (:mod:`gated_edit`): for the concept's own encoding (r = 1) it gives exactly the trained
output, for encodings C⁻¹-orthogonal to i* (r = 0) nothing, and in between a share proportional to
r where the gate would give almost all or almost nothing. So words that resemble the concept word
(its superclass above all) take part of the identity, which the gate keeps off: the price of a file
any LoRA loader applies. K follows the local key lock (W_K ī_super); the global lock needs the
superclass prompt at sampling time and has no LoRA form.
"""

from __future__ import annotations

import torch

from .concept import Concept

# ComfyUI and A1111/Forge read a one-encoder embedding from any single tensor; SDXL embeddings
# name each encoder's part.
_SINGLE_KEY = "emb_params"


def embedding_tensors(concept: Concept) -> dict[str, torch.Tensor]:
    """The learned word embedding as a one-vector textual-inversion file's tensors."""
    encoders = concept.info.text_encoders or (("", concept.token_embedding.shape[0]),)
    if len(encoders) == 1:
        return {_SINGLE_KEY: concept.token_embedding.float().reshape(1, -1).contiguous()}
    parts = torch.split(concept.token_embedding.float(), [w for _, w in encoders])
    return {f"clip_{key}": part.reshape(1, -1).contiguous() for (key, _), part in zip(encoders, parts)}


def rank1_updates(
    concept: Concept, weights: dict[str, tuple[torch.Tensor, torch.Tensor]]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(up, down) of ΔW = up · downᵀ for each edited projection, keyed by its module path
    (``<layer>.to_k`` / ``<layer>.to_v``). `weights` maps each of the concept's layers to the model's
    (W_K, W_V). down = u / (i*ᵀu) for every projection; up = o*_V − W_V i* for V and
    W_K (ī_super − i*) for K, so that (W + ΔW) i* is the trained target exactly. A concept trained
    with the key lock off has no K edit."""
    i_star, u = concept.i_star.double(), concept.u.double()
    down = u / torch.dot(i_star, u)
    super_shift = concept.superclass_encoding.double() - i_star
    missing = set(concept.v_targets) - set(weights)
    if missing:
        raise ValueError(
            f"the model has no cross-attention layer {sorted(missing)[0]} of concept '{concept.word}'"
        )
    key_edits = concept.info.training_settings.get("key_lock") != "off"
    updates = {}
    for layer, target in concept.v_targets.items():
        w_k, w_v = (w.double() for w in weights[layer])
        if w_v.shape != (target.shape[0], i_star.shape[0]):
            raise ValueError(
                f"{layer}.to_v is {tuple(w_v.shape)}; concept '{concept.word}' was trained for "
                f"({target.shape[0]}, {i_star.shape[0]})"
            )
        updates[f"{layer}.to_v"] = ((target.double() - w_v @ i_star).float(), down.float())
        if key_edits:
            updates[f"{layer}.to_k"] = ((w_k @ super_shift).float(), down.float())
    return updates
