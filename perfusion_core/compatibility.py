"""Does a concept fit the loaded model? (docs/method.md §7)

A concept is a set of vectors sized for one model's text encoder and cross-attention layers. Applying
it to a model with other layers or widths cannot work, so that is refused with a message that says
which model the concept was made for. A different encoder fingerprint within the same family (a
fine-tune) only warns: users apply concepts to fine-tunes the way they apply LoRAs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .concept import Concept
from .layers import CrossAttentionLayer

__all__ = ["ConceptMismatchError", "ModelSignature", "check_compatible", "describe_model"]


class ConceptMismatchError(ValueError):
    """The concept was trained for a different model (family, text-encoder width or layers)."""

    def __init__(self, message: str, *, source: str, trained_for: str, loaded: str):
        super().__init__(message)
        self.source = source
        self.trained_for = trained_for
        self.loaded = loaded


@dataclass(frozen=True)
class ModelSignature:
    """What a concept must match in the loaded model: family, encoder and cross-attention layers."""

    model_family: str
    encoder_width: int
    encoder_fingerprint: str
    layers: dict[str, int] = field(default_factory=dict)  # layer name -> width, in model order
    text_encoders: tuple[tuple[str, int], ...] = ()  # ((key, width), ...) of the CLIP

    @classmethod
    def from_layers(
        cls,
        model_family: str,
        encoder_fingerprint: str,
        layers: Iterable[CrossAttentionLayer],
        text_encoders: tuple[tuple[str, int], ...] = (),
    ) -> ModelSignature:
        """Build a signature from discovered layers (layers.find_cross_attention_layers)."""
        layers = list(layers)
        widths = {layer.context_dim for layer in layers}
        if len(widths) > 1:
            raise ValueError(f"cross-attention layers disagree on the text-encoder width: {sorted(widths)}")
        return cls(
            model_family=model_family,
            encoder_width=widths.pop() if widths else 0,
            encoder_fingerprint=encoder_fingerprint,
            layers={layer.name: layer.width for layer in layers},
            text_encoders=tuple(text_encoders),
        )


def describe_model(family: str, layers: dict[str, int], encoder_width: int) -> str:
    """E.g. "SD15 (16 cross-attention layers, widths 320/640/1280, text encoder 768-wide)"."""
    widths = "/".join(str(w) for w in sorted(set(layers.values()))) or "none"
    return (
        f"{family or 'an unknown model'} ({len(layers)} cross-attention layers, widths {widths}, "
        f"text encoder {encoder_width}-wide)"
    )


def describe_encoders(encoders: tuple[tuple[str, int], ...]) -> str:
    """E.g. "l 768 + g 1280"."""
    return " + ".join(f"{key} {width}" for key, width in encoders) or "none"


def _short(fingerprint: str) -> str:
    if not fingerprint:
        return "(unknown)"
    return fingerprint if len(fingerprint) <= 16 else fingerprint[:16] + "…"


def _layer_difference(concept_layers: dict[str, int], model_layers: dict[str, int]) -> str | None:
    """The first few concrete differences, in plain words, or None if the layers match."""
    missing = [n for n in concept_layers if n not in model_layers]
    extra = [n for n in model_layers if n not in concept_layers]
    resized = [n for n in concept_layers if n in model_layers and concept_layers[n] != model_layers[n]]
    parts = []
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        parts.append(f"layer {missing[0]!r}{more} not found in the loaded model")
    if extra:
        more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
        parts.append(f"the loaded model's layer {extra[0]!r}{more} not in the concept")
    if resized:
        n = resized[0]
        more = f" ({len(resized) - 1} more differ)" if len(resized) > 1 else ""
        parts.append(
            f"layer {n!r} is {concept_layers[n]} wide in the concept, {model_layers[n]} in the model{more}"
        )
    return "; ".join(parts) or None


def check_compatible(concept: Concept, signature: ModelSignature, *, source: str) -> list[str]:
    """Raise ConceptMismatchError if `concept` cannot apply to the model; return warnings otherwise.

    Refused: a different model family, text-encoder width, or set of cross-attention layers/widths
    (layer order does not matter; names and widths do). Warned: same family and shape but another
    text-encoder fingerprint (a fine-tune), as with LoRAs.
    """
    info = concept.info
    concept_layers = concept.layer_widths
    trained_for = describe_model(info.model_family, concept_layers, concept.encoder_width)
    loaded = describe_model(signature.model_family, signature.layers, signature.encoder_width)

    problems = []
    if info.model_family.strip().casefold() != signature.model_family.strip().casefold():
        problems.append(f"model family {info.model_family!r} vs {signature.model_family!r}")
    if concept.encoder_width != signature.encoder_width:
        problems.append(f"text encoder {concept.encoder_width} vs {signature.encoder_width} wide")
    encoders = info.text_encoders
    if encoders is None:  # a format-1 file: one encoder as wide as the embedding
        encoders = (
            ((signature.text_encoders[0][0], concept.encoder_width),) if signature.text_encoders else ()
        )
    if signature.text_encoders and encoders != signature.text_encoders:
        problems.append(
            f"text encoders {describe_encoders(encoders)} vs {describe_encoders(signature.text_encoders)}"
        )
    layer_diff = _layer_difference(concept_layers, signature.layers)
    if layer_diff:
        problems.append(layer_diff)
    if problems:
        raise ConceptMismatchError(
            f"'{source}' was trained for {trained_for}; the loaded model is {loaded}. "
            f"It cannot be applied ({'; '.join(problems)}).",
            source=source,
            trained_for=trained_for,
            loaded=loaded,
        )

    warnings = []
    if info.encoder_fingerprint != signature.encoder_fingerprint:
        warnings.append(
            f"'{source}' was trained with text encoder {_short(info.encoder_fingerprint)} "
            f"({info.model_family}); the loaded model's text encoder is "
            f"{_short(signature.encoder_fingerprint)} ({signature.model_family}), likely a fine-tune. "
            "Applying it anyway, as with a LoRA; the concept may look weaker or drift."
        )
    return warnings
