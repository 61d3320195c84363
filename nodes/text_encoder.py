"""Concept words in the text encoder (host glue).

A concept word typed in any prompt becomes the concept's learned input embedding. This reuses
ComfyUI's textual-inversion path: a CLIP clone gets its own copy of the tokenizer whose
`embedding:` lookup knows the concept words, so a stock CLIPTextEncode needs nothing else.
For global key-locking the clone's encoder also encodes the prompt a second time with each
concept word's embedding swapped for its superclass word's embedding (positions stay aligned)
and attaches that encoding as a model cond for the K projections (spec §5).
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


def _inner_tokenizer(tokenizer):
    """The SDTokenizer inside an SD1Tokenizer-style wrapper (`clip_l`, `clip_h`, ...)."""
    return getattr(tokenizer, tokenizer.clip)


def tokenizer_key(clip) -> str:
    """Key of this CLIP's token lists in `clip.tokenize(...)` (e.g. "l" for SD1.5)."""
    return clip.tokenizer.clip_name


def encoder_module(clip) -> torch.nn.Module:
    """The SDClipModel that encodes this CLIP's prompts."""
    return getattr(clip.cond_stage_model, clip.tokenizer.clip)


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


class KeyLockedEncoder:
    """Replacement `encode_token_weights`: adds the superclass prompt's encoding for K (spec §5).

    Prompts without a globally locked concept carry their own encoding, so a negative prompt
    encoded by the same CLIP still batches with the positive one.
    """

    def __init__(self, original, swaps: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.original = original
        self.swaps = tuple(swaps)

    def _swap(self, token):
        for embedding, superclass in self.swaps:
            if token is embedding:
                return superclass
        return token

    def __call__(self, token_weight_pairs):
        out = self.original(token_weight_pairs)
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
    swaps = [
        (w.embedding, w.superclass_embedding) for w in known.values() if w.superclass_embedding is not None
    ]
    if swaps:
        current = patched.patcher.get_model_object(_ENCODE)
        original = current.original if isinstance(current, KeyLockedEncoder) else current
        patched.patcher.add_object_patch(_ENCODE, KeyLockedEncoder(original, swaps))
    return patched
