"""Applies one concept to a MODEL/CLIP pair: the logic both loader nodes share."""

from __future__ import annotations

import logging

from ..perfusion_core.compatibility import ModelSignature, check_compatible
from ..perfusion_core.concept import Concept
from ..perfusion_core.concept_set import AppliedConcept
from . import model_patch, text_encoder
from .host_support import require_host

LOCK_MODES = ("local", "global", "off")
log = logging.getLogger("comfyui-perfusion")


def model_signature(model, clip) -> ModelSignature:
    """What a concept must match: family, cross-attention layers and widths, text encoder."""
    return ModelSignature.from_layers(
        type(model.model.model_config).__name__,
        text_encoder.encoder_fingerprint(clip),
        model_patch.served_layers(model, clip),
        text_encoder.encoder_layout(clip),
    )


def apply_concept(
    model,
    clip,
    concept: Concept,
    bias: float,
    temperature: float,
    key_lock: str,
    source: str,
    bias_end: float | None = None,
):
    """(patched MODEL clone, patched CLIP clone); refuses a concept made for another model, or for
    encodings of another text-encoder layer than this CLIP's (CLIP Set Last Layer). `bias_end`: the
    bias at the last sampling step, reached linearly from `bias` (None: constant)."""
    require_host()
    if key_lock not in LOCK_MODES:
        raise ValueError(f"key_lock must be one of {LOCK_MODES}, got '{key_lock}'")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (got {temperature})")
    for warning in check_compatible(concept, model_signature(model, clip), source=source):
        log.warning(warning)
    layer = concept.info.clip_layer
    mismatch = text_encoder.layer_mismatch(concept.word, layer, text_encoder.encoder_layer(clip))
    if mismatch:
        raise ValueError(mismatch)
    global_lock = key_lock == "global"
    applied = AppliedConcept(
        concept,
        beta=float(bias),
        tau=float(temperature),
        global_lock=global_lock,
        key_edit=key_lock != "off",
        beta_end=bias_end,
    )
    word = text_encoder.ConceptWord(
        concept.word,
        text_encoder.split_embedding(clip, concept.token_embedding),
        text_encoder.split_embedding(clip, text_encoder.input_embedding(clip, concept.info.superclass)),
        global_lock=global_lock,
        clip_layer=layer,
    )
    return model_patch.apply_concepts(model, (applied,)), text_encoder.clip_with_concepts(clip, [word])
