"""Concept words in the text encoder(s) (host glue).

A concept word typed in any prompt becomes the concept's learned input embedding, one per text
encoder (SD1.x: CLIP-L; SD2.x: OpenCLIP-H; SDXL: CLIP-L and OpenCLIP-bigG, whose encodings are
concatenated). This reuses ComfyUI's textual-inversion path: a CLIP clone gets its own copy of each
inner tokenizer whose `embedding:` lookup knows the concept words, so a stock CLIPTextEncode needs
nothing else. The encoders, their keys and widths come from the loaded CLIP, never from model names.

The concept word must not change anything but what the edit reads, so the pooled output (SDXL's
size-and-style vector) is that of the prompt with each concept word replaced by its superclass word,
as the key lock does for K. For global key-locking the clone's encoder also attaches, as a model
cond for the K projections, the encoding of the prompt with the globally locked words swapped
(positions stay aligned) for each 77-token window that holds one (docs/method.md §5, key_lock.py).

The gate recognises a concept word by its encoding at the text-encoder layer it was trained on, so
a prompt with the word encoded at another layer (CLIP Set Last Layer) is refused, not mis-applied.

It is longer than the pack's other modules (~450 lines) on purpose: it is the one place that reads
ComfyUI's tokenizer and text-encoder internals (inner tokenizers, `embedding:` lookup, layer
indices), so when a release changes them (as 0.28 did), this file is the one to probe and mend.
"""

from __future__ import annotations

import copy
import inspect
import re
import types
from collections.abc import Sequence
from dataclasses import dataclass

import comfy.sd1_clip
import torch

from ..perfusion_core.covariance import text_encoder_fingerprint
from .host_support import incompatible
from .key_lock import KEY_CONTEXT, KeyWindows

_ENCODE = "encode_token_weights"


@dataclass(frozen=True)
class TextEncoder:
    """One text encoder of a CLIP: `key` names its token lists in `clip.tokenize(...)` ("l", "g",
    "h"), `attribute` the tokenizer and the module on the CLIP ("clip_l", ...)."""

    key: str
    attribute: str
    module: torch.nn.Module

    @property
    def width(self) -> int:
        return int(self.module.transformer.get_input_embeddings().weight.shape[1])


def text_encoders(clip) -> list[TextEncoder]:
    """The CLIP text encoders whose encodings the model reads, in the order they are concatenated.

    Found by what the host's tokenizer holds (SD1Tokenizer: one `clip_*` tokenizer; SDXLTokenizer:
    `clip_l` and `clip_g`); a text encoder that is not a CLIP tokenizer + transformer (T5, LLMs)
    is refused by name.
    """
    tokenizer, model = clip.tokenizer, clip.cond_stage_model
    found = []
    for attribute, inner in vars(tokenizer).items():
        if not isinstance(inner, comfy.sd1_clip.SDTokenizer):
            continue
        key = tokenizer.clip_name if attribute == getattr(tokenizer, "clip", None) else attribute[5:]
        module = getattr(model, attribute, None)
        embeddings = getattr(getattr(module, "transformer", None), "get_input_embeddings", None)
        if not attribute.startswith("clip_") or embeddings is None:
            raise ValueError(
                f"the CLIP's text encoder '{attribute}' ({type(module).__name__}) is not a CLIP text "
                "encoder: Perfusion concepts serve SD1.x, SD2.x and SDXL-family models"
            )
        found.append(TextEncoder(key, attribute, module))
    if not found:
        raise ValueError(
            f"this CLIP ({type(model).__name__}) has no CLIP text encoder: Perfusion concepts serve "
            "SD1.x, SD2.x and SDXL-family models"
        )
    return found


def encoder_layout(clip) -> tuple[tuple[str, int], ...]:
    """((key, input width), ...) of the CLIP's text encoders, e.g. (("l", 768), ("g", 1280))."""
    return tuple((e.key, e.width) for e in text_encoders(clip))


def split_embedding(clip, embedding: torch.Tensor) -> dict[str, torch.Tensor]:
    """A word's concatenated input embedding as one tensor per text encoder (key -> (width,)).

    With one encoder the tensor itself is returned (tokens are recognised by identity)."""
    encoders = text_encoders(clip)
    widths = [e.width for e in encoders]
    if embedding.shape[-1] != sum(widths):
        raise ValueError(
            f"a word embedding {embedding.shape[-1]} wide does not fit this CLIP's text encoders "
            f"({' + '.join(f'{e.key} {e.width}' for e in encoders)})"
        )
    if len(encoders) == 1:
        return {encoders[0].key: embedding}
    return {e.key: part for e, part in zip(encoders, torch.split(embedding, widths, dim=-1), strict=True)}


@dataclass(frozen=True)
class ConceptWord:
    """How one concept word enters the text encoder(s)."""

    word: str
    embeddings: dict[str, torch.Tensor]  # encoder key -> (width,) spliced in at the word's position
    # encoder key -> (width,) of the superclass word: the pooled output (and, with `global_lock`, the
    # keys) read the prompt with this in the word's place. None: leave the pooled output as encoded.
    superclass_embeddings: dict[str, torch.Tensor] | None = None
    global_lock: bool = False
    clip_layer: int | None = None  # the layer it was trained on; prompts at another layer are refused


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


def _common_layer(layers: list[int | None]) -> int | None:
    """The layer all encoders read, or None if unknown or they differ."""
    return layers[0] if layers and all(n == layers[0] for n in layers) else None


def encoder_layer(clip) -> int | None:
    """The layer this CLIP's prompts are encoded from: each encoder's `layer_idx` (set by CLIP Set Last
    Layer) applied over its default, as `CLIP.encode_from_tokens` applies it."""
    layers = []
    for encoder in text_encoders(clip):
        module = encoder.module
        layer, layer_idx = module.options_default[:2]
        if clip.layer_idx is not None and layer in ("last", "hidden"):
            if abs(clip.layer_idx) > module.num_layers:
                layer = "last"
            else:
                layer, layer_idx = "hidden", clip.layer_idx
        layers.append(_layer_number(module, layer, layer_idx))
    return _common_layer(layers)


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
    """Width of the word embedding across the CLIP's encoders (= the cross-attention context width)."""
    return sum(e.width for e in text_encoders(clip))


def encoder_fingerprint(clip) -> str:
    """Identifies the text encoder weights (one encoder: its state dict, as before SDXL support)."""
    encoders = text_encoders(clip)
    if len(encoders) == 1:
        return text_encoder_fingerprint(encoders[0].module.state_dict().items())
    items = [(f"{e.attribute}.{k}", v) for e in encoders for k, v in e.module.state_dict().items()]
    return text_encoder_fingerprint(items)


def tokenize_unweighted(clip, text: str) -> dict:
    """`clip.tokenize` with the prompt-weight syntax off, so '(' and ')' are text. Hosts from before
    2025 lack `disable_weights`: there the brackets are escaped, which their weight parser reads as
    literal brackets (the same tokens)."""
    parameters = inspect.signature(clip.tokenize).parameters.values()
    if any(p.kind is p.VAR_KEYWORD or p.name == "disable_weights" for p in parameters):
        return clip.tokenize(text, disable_weights=True)
    return clip.tokenize(text.replace("(", "\\(").replace(")", "\\)"))


def _word_tokens(inner, text: str) -> list:
    """The tokens of `text` without start, end and padding tokens: those the tokenizer gives a word id
    (`tokenize_with_weights` reserves id 0 for the others, as it has since 2023). Uses the host's own
    method, never a copy's override."""
    batches = type(inner).tokenize_with_weights(inner, text, True)
    return [t[0] for batch in batches for t in batch if t[2] != 0]


def word_token_ids(clip, word: str) -> list[int]:
    """BPE ids of `word` without start/end tokens (CLIP encoders share one vocabulary)."""
    return _word_tokens(getattr(clip.tokenizer, text_encoders(clip)[0].attribute), word)


def is_vocabulary_word(clip, word: str) -> bool:
    """True when `word` is one whole-word token of the vocabulary (e.g. "teddy")."""
    return len(word_token_ids(clip, word)) == 1


def input_embedding(clip, word: str) -> torch.Tensor:
    """The input embedding of a one-token word, float32 on the CPU, the encoders' concatenated."""
    ids = word_token_ids(clip, word)
    if len(ids) != 1:
        raise ValueError(
            f"'{word}' is {len(ids)} tokens for this text encoder; a superclass word must be one "
            "vocabulary word (e.g. 'teddy', 'dog', 'cat')"
        )
    rows = [e.module.transformer.get_input_embeddings().weight[ids[0]] for e in text_encoders(clip)]
    return torch.cat([r.detach().to(device="cpu", dtype=torch.float32) for r in rows]).clone()


# Common one-token words that stand in for concept words while the host tokenizes (see
# _tokenize_with_concepts); any of them may also occur in a prompt.
_PLACEHOLDER_CANDIDATES = (
    "cat dog car sun tree house bird fish book lamp door boat cup hat ball star moon road bed chair "
    "table shoe bag rock leaf cake box bell coin key ring drum kite rope lake hill bread milk egg"
).split()


def _tokenize_with_concepts(self, text: str, return_word_ids: bool = False, **kwargs):
    """The host's `tokenize_with_weights` with each concept word's token replaced by its embedding.

    The prompt is tokenized twice, each concept word standing in for a different one-token word
    (`a` then `b` placeholders): the positions whose tokens differ are the concept words' and nothing
    else, so a placeholder word typed in the prompt stays itself. Weights, chunking into 77-token
    windows and word ids are the host's: a one-token word is chunked as a one-vector embedding is.
    A concept word inside an `embedding:` name is part of the name (see _concept_pattern).
    """
    stock = type(self).tokenize_with_weights
    if not any(m.group("word") for m in self._perfusion_pattern.finditer(text)):
        return stock(self, text, return_word_ids, **kwargs)

    def with_placeholders(placeholders: dict[str, str]) -> list:
        def swap(m: re.Match) -> str:
            return f" {placeholders[m.group('word').lower()]} " if m.group("word") else m.group(0)

        return stock(self, self._perfusion_pattern.sub(swap, text), True, **kwargs)

    first, second = (with_placeholders(p) for p in self._perfusion_placeholders)
    if [len(b) for b in first] != [len(b) for b in second]:
        raise incompatible(f"a tokenizer that keeps one-token words one token in the prompt {text!r}")
    out = []
    for batch_a, batch_b in zip(first, second, strict=True):
        batch = []
        for a, b in zip(batch_a, batch_b, strict=True):
            if isinstance(a[0], int) and a[0] != b[0]:
                a = (self._perfusion_by_token[a[0]].embeddings[self._perfusion_key], *a[1:])
            batch.append(a if return_word_ids else a[:2])
        out.append(batch)
    return out


def _is_one_token(inner, word: str) -> bool:
    tokens = _word_tokens(inner, word)
    return len(tokens) == 1 and isinstance(tokens[0], int)


def _placeholders(inner, words: dict[str, ConceptWord]) -> tuple[tuple[dict, dict], dict[int, ConceptWord]]:
    """Two placeholder words per concept word (see _tokenize_with_concepts), all distinct, each one
    token for this tokenizer, and the concept each first placeholder's token stands for."""
    single = (w for w in _PLACEHOLDER_CANDIDATES if _is_one_token(inner, w))
    pairs = list(zip(single, single))
    if len(pairs) < len(words):
        raise incompatible(
            f"enough one-token words in its tokenizer ({type(inner).__name__}) to stand in for "
            f"{len(words)} concept words"
        )
    first = {key: a for key, (a, _) in zip(words, pairs)}
    second = {key: b for key, (_, b) in zip(words, pairs)}
    by_token = {_word_tokens(inner, first[key])[0]: word for key, word in words.items()}
    return (first, second), by_token


def _concept_pattern(inner, words: dict[str, ConceptWord]) -> re.Pattern:
    """Matches the concept words as whole words (group "word"), and the textual-inversion names
    (`embedding:NAME`) of a tokenizer that reads them as a whole, so that a concept word inside one
    is left to the host: it names the user's embedding file, not the concept.

    A name starts where the host looks for one (the start of a weighted segment or after white space;
    segments begin at brackets) and ends at white space, at '<' / '[' (its leftover text rule) or
    where the segment does, at a bracket.
    """
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    word = rf"(?<![\w-])(?P<word>{alternatives})(?![\w-])"
    identifier = getattr(inner, "embedding_identifier", None)
    if not identifier or getattr(inner, "embedding_directory", None) is None:
        return re.compile(word, re.IGNORECASE)
    name = rf"(?:^|(?<=[\s()]))(?-i:{re.escape(identifier)})[^\s<\[()]*"  # the host's match is case-sensitive
    return re.compile(rf"{name}|{word}", re.IGNORECASE)


def _concept_tokenizer(clip, words: dict[str, ConceptWord]):
    """A copy of the CLIP's tokenizer (CLIP.clone() shares it) whose inner tokenizers know `words`."""
    outer = copy.copy(clip.tokenizer)
    for encoder in text_encoders(clip):
        inner = copy.copy(getattr(clip.tokenizer, encoder.attribute))
        inner._perfusion_words = words
        inner._perfusion_key = encoder.key
        inner._perfusion_pattern = _concept_pattern(inner, words)
        inner._perfusion_placeholders, inner._perfusion_by_token = _placeholders(inner, words)
        inner.tokenize_with_weights = types.MethodType(_tokenize_with_concepts, inner)
        setattr(outer, encoder.attribute, inner)
    return outer


def concept_words(clip) -> dict[str, ConceptWord]:
    """Concept words this CLIP already knows (from earlier loaders in a chain)."""
    inner = getattr(clip.tokenizer, text_encoders(clip)[0].attribute)
    return dict(getattr(inner, "_perfusion_words", {}))


def _swap_map(words: Sequence[ConceptWord]) -> dict[int, torch.Tensor]:
    """id(word embedding) -> the superclass embedding that takes its place, for every encoder."""
    return {
        id(w.embeddings[key]): w.superclass_embeddings[key]
        for w in words
        if w.superclass_embeddings is not None
        for key in w.embeddings
    }


def _swapped(token_weight_pairs: dict, swaps: dict[int, torch.Tensor]) -> dict | None:
    """The token lists with swapped embeddings, or None when no token is swapped."""
    changed = False

    def swap(token):
        nonlocal changed
        new = swaps.get(id(token)) if isinstance(token, torch.Tensor) else None
        changed = changed or new is not None
        return token if new is None else new

    out = {
        key: [[(swap(t[0]), *t[1:]) for t in seq] for seq in sequences]
        for key, sequences in token_weight_pairs.items()
    }
    return out if changed else None


class ConceptEncoder:
    """Replacement `encode_token_weights` of a CLIP that knows concept words.

    Refuses a prompt whose encoders hold a concept word at different tokens (SDXL's text_g and
    text_l), and one holding a concept word when an encoder is set to another layer than the
    concept's: `CLIP.encode_from_tokens` has applied the encoding CLIP's layer to the shared modules
    just before, so this also catches a CLIP Set Last Layer placed after the loader. A prompt with a
    concept word gets the pooled output of its superclass prompt. With globally key-locked concepts it
    adds, for K, the superclass prompt's encoding of each window holding a locked word (docs/method.md §5,
    key_lock.KeyWindows); prompts without one carry an empty set, so a negative prompt encoded by the
    same CLIP still batches with the positive one.
    """

    def __init__(self, original, modules: Sequence[torch.nn.Module], words: Sequence[ConceptWord]) -> None:
        self.original = original
        self.modules = tuple(modules)
        self.words = tuple(words)  # keeps the embeddings the swap maps name by id() alive
        self.layered = tuple(w for w in words if w.clip_layer is not None)
        self.pooled_swaps = _swap_map(words)
        self.key_swaps = _swap_map([w for w in words if w.global_lock])

    def _check_layer(self, token_weight_pairs) -> None:
        used = _common_layer([_layer_number(m, m.layer, m.layer_idx) for m in self.modules])
        for w in self.layered:
            problem = layer_mismatch(w.word, w.clip_layer, used)
            ids = {id(e) for e in w.embeddings.values()}
            if problem and any(
                id(t[0]) in ids for seqs in token_weight_pairs.values() for seq in seqs for t in seq
            ):
                raise ValueError(problem)

    def _check_positions(self, token_weight_pairs) -> None:
        """Refuse a concept word at different tokens for different encoders (CLIPTextEncodeSDXL's
        text_g and text_l are tokenized apart): the model reads their encodings side by side, token
        by token, so no token would carry the whole learned encoding."""
        if len(token_weight_pairs) < 2:
            return
        owner = {id(e): (w.word, key) for w in self.words for key, e in w.embeddings.items()}
        found: dict[str, dict[str, list[int]]] = {}
        for key, sequences in token_weight_pairs.items():
            flat = (t[0] for seq in sequences for t in seq)
            for position, token in enumerate(flat):
                word, word_key = owner.get(id(token), (None, None))
                if word is not None and word_key == key:
                    found.setdefault(word, {}).setdefault(key, []).append(position)
        for word, by_key in found.items():
            where = {key: by_key.get(key, []) for key in token_weight_pairs}
            if len({tuple(p) for p in where.values()}) > 1:
                told = " but ".join(
                    f"token {', '.join(map(str, p))} of text_{key}" if p else f"nowhere in text_{key}"
                    for key, p in where.items()
                )
                raise ValueError(
                    f"concept word '{word}' is at {told} (CLIPTextEncodeSDXL tokenizes them apart): the "
                    "model reads both text encoders' tokens side by side, so the concept acts only where "
                    "both have its word at the same token. Write the same words before it in text_g and "
                    "text_l (or the same prompt in both)"
                )

    def __call__(self, token_weight_pairs):
        self._check_layer(token_weight_pairs)
        self._check_positions(token_weight_pairs)
        out = self.original(token_weight_pairs)
        superclass_tokens = _swapped(token_weight_pairs, self.pooled_swaps)
        if superclass_tokens is None and not self.key_swaps:
            return out
        cond, pooled = out[0], out[1]
        extra = dict(out[2]) if len(out) > 2 else {}
        superclass_out = self.original(superclass_tokens) if superclass_tokens is not None else None
        if superclass_out is not None:
            pooled = superclass_out[1]
        if self.key_swaps:
            key_tokens = _swapped(token_weight_pairs, self.key_swaps)
            if key_tokens is None:
                key_context = cond
            elif self.key_swaps.keys() == self.pooled_swaps.keys():
                key_context = superclass_out[0]
            else:
                key_context = self.original(key_tokens)[0]
            window = len(next(iter(token_weight_pairs.values()))[0])
            extra["model_conds"] = {
                **extra.get("model_conds", {}),
                KEY_CONTEXT: KeyWindows.of(cond, key_context, window),
            }
        return (cond, pooled, extra) if extra else (cond, pooled)


def clip_with_concepts(clip, words: Sequence[ConceptWord]):
    """A CLIP clone that maps each concept word to its embeddings; the input is untouched."""
    known = concept_words(clip)
    for w in words:
        if w.word.lower() in known:
            raise ValueError(f"concept word '{w.word}' is already applied to this CLIP")
        known[w.word.lower()] = w
    patched = clip.clone()
    patched.tokenizer = _concept_tokenizer(clip, known)
    if any(w.clip_layer is not None or w.superclass_embeddings is not None for w in known.values()):
        current = patched.patcher.get_model_object(_ENCODE)
        original = current.original if isinstance(current, ConceptEncoder) else current
        modules = [e.module for e in text_encoders(clip)]
        patched.patcher.add_object_patch(_ENCODE, ConceptEncoder(original, modules, list(known.values())))
    return patched
