"""Applies one concept to a MODEL/CLIP pair: the logic both loader nodes share."""

from __future__ import annotations

import logging

from ..perfusion_core.compatibility import ModelSignature, check_compatible
from ..perfusion_core.concept import Concept
from ..perfusion_core.concept_set import AppliedConcept
from . import model_patch, text_encoder

LOCK_MODES = ("local", "global", "off")
log = logging.getLogger("comfyui-perfusion")


def model_signature(model, clip) -> ModelSignature:
    """What a concept must match: family, cross-attention layers and widths, text encoder."""
    return ModelSignature(
        model_family=type(model.model.model_config).__name__,
        encoder_width=text_encoder.encoder_width(clip),
        encoder_fingerprint=text_encoder.encoder_fingerprint(clip),
        layers={layer.name: layer.width for layer in model_patch.cross_attention_layers(model)},
    )


def apply_concept(model, clip, concept: Concept, bias: float, temperature: float, key_lock: str, source: str):
    """(patched MODEL clone, patched CLIP clone); refuses a concept made for another model, or for
    encodings of another text-encoder layer than this CLIP's (CLIP Set Last Layer)."""
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
    superclass = text_encoder.input_embedding(clip, concept.info.superclass) if global_lock else None
    applied = AppliedConcept(
        concept, beta=float(bias), tau=float(temperature), global_lock=global_lock, key_edit=key_lock != "off"
    )
    word = text_encoder.ConceptWord(concept.word, concept.token_embedding, superclass, layer)
    return model_patch.apply_concepts(model, (applied,)), text_encoder.clip_with_concepts(clip, [word])
