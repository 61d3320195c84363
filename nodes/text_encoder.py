"""Concept words in the text encoder (host glue).

A concept word typed in any prompt becomes the concept's learned input embedding. This reuses
ComfyUI's textual-inversion path: a CLIP clone gets its own copy of the tokenizer whose
`embedding:` lookup knows the concept words, so a stock CLIPTextEncode needs nothing else.
For global key-locking the clone's encoder also encodes the prompt a second time with each
concept word's embedding swapped for its superclass word's embedding (positions stay aligned)
and attaches that encoding as a model cond for the K projections (spec §5).

The gate recognises a concept word by its encoding at the text-encoder layer it was trained on, so
a prompt with the word encoded at another layer (CLIP Set Last Layer) is refused, not mis-applied.
"""

from __future__ import annotations

import copy
import re
import types
from collections.abc import Sequence
from dataclasses import dataclass

import comfy.conds
import torch

from ..perfusion_core.covariance import text_encoder_fingerprint
from .key_lock import KEY_CONTEXT

_SENTINEL = "perfusion-concept-"
_ENCODE = "encode_token_weights"


@dataclass(frozen=True)
class ConceptWord:
    """How one concept word enters the text encoder."""

    word: str
    embedding: torch.Tensor  # (D,) spliced in at the word's position
    superclass_embedding: torch.Tensor | None = None  # (D,) set when the concept is globally key-locked
    clip_layer: int | None = None  # the layer it was trained on; prompts at another layer are refused


def _inner_tokenizer(tokenizer):
    """The SDTokenizer inside an SD1Tokenizer-style wrapper (`clip_l`, `clip_h`, ...)."""
    return getattr(tokenizer, tokenizer.clip)


def tokenizer_key(clip) -> str:
    """Key of this CLIP's token lists in `clip.tokenize(...)` (e.g. "l" for SD1.5)."""
    return clip.tokenizer.clip_name


def encoder_module(clip) -> torch.nn.Module:
    """The SDClipModel that encodes this CLIP's prompts."""
    return getattr(clip.cond_stage_model, clip.tokenizer.clip)


def _layer_number(module, layer, layer_idx) -> int | None:
    """SDClipModel's (layer, layer_idx) as CLIP Set Last Layer counts: -1 last, -2 penultimate, ...

    None when the module returns several layers ("all", a list). "last" is -1: with the final layer
    norm on hidden states (SD1.5, SD2) the two give the same encodings.
    """
    if layer == "last":
        return -1
    if layer == "hidden" and isinstance(layer_idx, int):
        return layer_idx - module.num_layers if layer_idx >= 0 else layer_idx
    return None


def encoder_layer(clip) -> int | None:
    """The layer this CLIP's prompts are encoded from: its `layer_idx` (set by CLIP Set Last Layer)
    applied over the encoder's default, as `CLIP.encode_from_tokens` applies it."""
    module = encoder_module(clip)
    layer, layer_idx = module.options_default[:2]
    if clip.layer_idx is not None and layer in ("last", "hidden"):
        if abs(clip.layer_idx) > module.num_layers:
            layer = "last"
        else:
            layer, layer_idx = "hidden", clip.layer_idx
    return _layer_number(module, layer, layer_idx)


def layer_mismatch(word: str, trained: int | None, used: int | None) -> str | None:
    """Why a concept trained on layer `trained` cannot read encodings of layer `used`, else None.

    Unknown layers (None: a file from before layers were recorded, an encoder returning several
    layers) are not refused: nothing says they differ.
    """
    if trained is None or used is None or trained == used:
        return None
    return (
        f"concept '{word}' was trained with the text encoder's layer {trained} (CLIP Set Last Layer "
        f"{trained}) but this CLIP uses layer {used}: the gate reads encodings of the trained layer "
        f"only. Set CLIP Set Last Layer to {trained} (before the loader, and no other value after it) "
        f"or retrain the concept at {used}"
    )


def encoder_width(clip) -> int:
    return int(encoder_module(clip).transformer.get_input_embeddings().weight.shape[1])


def encoder_fingerprint(clip) -> str:
    return text_encoder_fingerprint(encoder_module(clip).state_dict().items())


def word_token_ids(clip, word: str) -> list[int]:
    """BPE ids of `word` without start/end tokens."""
    inner = _inner_tokenizer(clip.tokenizer)
    ids = inner.tokenizer(word)["input_ids"]
    end = -1 if inner.tokenizer_adds_end_token else None
    return list(ids[inner.tokens_start : end])


def is_vocabulary_word(clip, word: str) -> bool:
    """True when `word` is one whole-word token of the vocabulary (e.g. "teddy")."""
    return len(word_token_ids(clip, word)) == 1


def input_embedding(clip, word: str) -> torch.Tensor:
    """The input embedding of a one-token word, float32 on the CPU."""
    ids = word_token_ids(clip, word)
    if len(ids) != 1:
        raise ValueError(
            f"'{word}' is {len(ids)} tokens for this text encoder; a superclass word must be one "
            "vocabulary word (e.g. 'teddy', 'dog', 'cat')"
        )
    weight = encoder_module(clip).transformer.get_input_embeddings().weight
    return weight[ids[0]].detach().to(device="cpu", dtype=torch.float32).clone()


def _tokenize_with_concepts(self, text: str, return_word_ids: bool = False, **kwargs):
    text = self._perfusion_pattern.sub(lambda m: f" embedding:{_SENTINEL}{m.group(0).lower()} ", text)
    return type(self).tokenize_with_weights(self, text, return_word_ids, **kwargs)


def _try_get_concept_embedding(self, name: str):
    first, _, leftover = name.strip().partition(" ")
    if first.startswith(_SENTINEL):
        word = self._perfusion_words.get(first[len(_SENTINEL) :])
        if word is not None:
            return word.embedding, leftover.strip()
    return type(self)._try_get_embedding(self, name)


def _concept_tokenizer(tokenizer, words: dict[str, ConceptWord]):
    """A copy of `tokenizer` (CLIP.clone() shares it) whose inner tokenizer knows `words`."""
    outer = copy.copy(tokenizer)
    inner = copy.copy(_inner_tokenizer(tokenizer))
    inner._perfusion_words = words
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    inner._perfusion_pattern = re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])", re.IGNORECASE)
    if inner.embedding_directory is None:
        inner.embedding_directory = []  # the tokenizer only looks up embeddings when this is set
    inner.tokenize_with_weights = types.MethodType(_tokenize_with_concepts, inner)
    inner._try_get_embedding = types.MethodType(_try_get_concept_embedding, inner)
    setattr(outer, outer.clip, inner)
    return outer


def concept_words(clip) -> dict[str, ConceptWord]:
    """Concept words this CLIP already knows (from earlier loaders in a chain)."""
    return dict(getattr(_inner_tokenizer(clip.tokenizer), "_perfusion_words", {}))


class ConceptEncoder:
    """Replacement `encode_token_weights` of a CLIP that knows concept words.

    Refuses a prompt holding a concept word when the encoder is set to another layer than the
    concept's: `CLIP.encode_from_tokens` has applied the encoding CLIP's layer to the shared module
    just before, so this also catches a CLIP Set Last Layer placed after the loader. With globally
    key-locked concepts it adds the superclass prompt's encoding for K (spec §5); prompts without a
    globally locked concept then carry their own, so a negative prompt encoded by the same CLIP still
    batches with the positive one.
    """

    def __init__(self, original, module: torch.nn.Module, words: Sequence[ConceptWord]) -> None:
        self.original = original
        self.module = module
        self.layered = tuple(w for w in words if w.clip_layer is not None)
        self.swaps = tuple(
            (w.embedding, w.superclass_embedding) for w in words if w.superclass_embedding is not None
        )

    def _check_layer(self, token_weight_pairs) -> None:
        used = _layer_number(self.module, self.module.layer, self.module.layer_idx)
        for w in self.layered:
            problem = layer_mismatch(w.word, w.clip_layer, used)
            if problem and any(
                t[0] is w.embedding for seqs in token_weight_pairs.values() for seq in seqs for t in seq
            ):
                raise ValueError(problem)

    def _swap(self, token):
        for embedding, superclass in self.swaps:
            if token is embedding:
                return superclass
        return token

    def __call__(self, token_weight_pairs):
        self._check_layer(token_weight_pairs)
        out = self.original(token_weight_pairs)
        if not self.swaps:
            return out
        swapped = {
            key: [[(self._swap(t[0]), *t[1:]) for t in seq] for seq in sequences]
            for key, sequences in token_weight_pairs.items()
        }
        changed = any(
            a[0] is not b[0]
            for key in token_weight_pairs
            for s1, s2 in zip(token_weight_pairs[key], swapped[key])
            for a, b in zip(s1, s2)
        )
        key_context = self.original(swapped)[0] if changed else out[0]
        extra = dict(out[2]) if len(out) > 2 else {}
        extra["model_conds"] = {
            **extra.get("model_conds", {}),
            KEY_CONTEXT: comfy.conds.CONDCrossAttn(key_context),
        }
        return (out[0], out[1], extra)


def clip_with_concepts(clip, words: Sequence[ConceptWord]):
    """A CLIP clone that maps each concept word to its embedding; the input is untouched."""
    known = concept_words(clip)
    for w in words:
        if w.word.lower() in known:
            raise ValueError(f"concept word '{w.word}' is already applied to this CLIP")
        known[w.word.lower()] = w
    patched = clip.clone()
    patched.tokenizer = _concept_tokenizer(clip.tokenizer, known)
    if any(w.clip_layer is not None or w.superclass_embedding is not None for w in known.values()):
        current = patched.patcher.get_model_object(_ENCODE)
        original = current.original if isinstance(current, ConceptEncoder) else current
        encoder = ConceptEncoder(original, encoder_module(clip), list(known.values()))
        patched.patcher.add_object_patch(_ENCODE, encoder)
    return patched
