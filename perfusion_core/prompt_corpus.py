"""A varied, deterministic prompt corpus for estimating the text-encoding second moment C (docs/method.md §6).

The paper estimated C from ~100k captions; nothing can be downloaded here, so prompts are generated
from word lists shipped in the pack (`prompt_words`). What matters for C is that the encodings cover
the token positions and contexts the denoiser sees: bare words ("dog"), training-style templates
("a photo of a {}"), captions, long comma-separated multi-clause prompts and tag-heavy art prompts
that approach CLIP's 77-token limit. Short prompts leave most positions as padding, long ones fill
them with content, so both kinds are mixed.

Determinism: only `random.Random(seed).random()` is used. Python guarantees that method's sequence
for a given integer seed across versions (`choice`/`sample` carry no such promise), and nothing
depends on `hash()` or set order, so the corpus is identical across processes and Python versions.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

from . import prompt_words as W

# Bump the number when the generator's logic changes; the suffix follows the word lists by itself.
_GENERATOR_VERSION = "1"


def _lists_digest() -> str:
    names = sorted(n for n in dir(W) if n.isupper())
    payload = repr([(n, getattr(W, n)) for n in names]).encode("utf-8")
    return hashlib.sha256(payload).hexdigest()[:10]


CORPUS_VERSION: str = f"{_GENERATOR_VERSION}-{_lists_digest()}"

_SUBJECT_KINDS: tuple[tuple[str, tuple[str, ...], float], ...] = (
    ("animal", W.ANIMALS, 0.26),
    ("person", W.PEOPLE, 0.22),
    ("object", W.OBJECTS, 0.22),
    ("vehicle", W.VEHICLES, 0.09),
    ("food", W.FOOD, 0.08),
    ("plant", W.PLANTS, 0.06),
    ("building", W.BUILDINGS, 0.07),
)

# "an" before these despite the consonant letter, "a" before these despite the vowel letter.
_AN_EXCEPTIONS = ("hour", "honest", "heir", "hd", "8k", "85mm", "18")
_A_EXCEPTIONS = ("uni", "use", "usu", "euro", "one", "ukiyo", "uhd", "ufo")


def _article(phrase: str) -> str:
    """'a'/'an' for a phrase, good enough for generated English."""
    low = phrase.lower()
    if low.startswith(_AN_EXCEPTIONS):
        return "an"
    if low.startswith(_A_EXCEPTIONS):
        return "a"
    return "an" if low[:1] in "aeiou" else "a"


def _with_article(phrase: str) -> str:
    return f"{_article(phrase)} {phrase}"


class _Generator:
    """One prompt per `prompt()` call; all randomness goes through `Random.random()`."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    # --- primitives --------------------------------------------------------------------------------
    def _u(self) -> float:
        return self._rng.random()

    def _pick(self, seq: Sequence[str]) -> str:
        return seq[int(self._u() * len(seq))]

    def _int(self, lo: int, hi: int) -> int:
        """Uniform integer in [lo, hi]."""
        return lo + int(self._u() * (hi - lo + 1))

    def _chance(self, p: float) -> bool:
        return self._u() < p

    def _distinct(self, seq: Sequence[str], k: int) -> list[str]:
        out: list[str] = []
        for _ in range(4 * k):
            item = self._pick(seq)
            if item not in out:
                out.append(item)
            if len(out) == k:
                break
        return out

    # --- phrases -----------------------------------------------------------------------------------
    def _subject(self) -> tuple[str, str]:
        x = self._u() * sum(w for _, _, w in _SUBJECT_KINDS)
        for kind, words, weight in _SUBJECT_KINDS:
            if x < weight:
                return self._pick(words), kind
            x -= weight
        kind, words, _ = _SUBJECT_KINDS[-1]
        return self._pick(words), kind

    def _noun_phrase(self, noun: str, kind: str, max_mods: int) -> str:
        """Adjective, colour, material in English order ("small red wooden chair")."""
        mods: list[str] = []
        n = self._int(0, max_mods)
        if n >= 1 and self._chance(0.7):
            mods.append(self._pick(W.ADJECTIVES))
        if n >= 2 or (n == 1 and not mods):
            mods.append(self._pick(W.COLORS))
        if n >= 3 and kind not in ("person", "animal"):
            mods.append(self._pick(W.MATERIALS))
        return " ".join([*mods, noun])

    def _action(self, kind: str) -> str:
        if kind in ("animal", "person"):
            return self._pick(W.ANIMATE_ACTIONS)
        if kind == "vehicle":
            return self._pick(W.VEHICLE_ACTIONS)
        return self._pick(W.OBJECT_ACTIONS)

    def _caption(self, max_mods: int = 2) -> str:
        noun, kind = self._subject()
        np = _with_article(self._noun_phrase(noun, kind, max_mods))
        parts = [np]
        if self._chance(0.75):
            parts.append(self._action(kind))
        parts.append(self._pick(W.PLACES))
        if self._chance(0.4):
            parts.append(self._pick(W.TIMES))
        return " ".join(parts)

    def _tags(self, pools: Sequence[Sequence[str]], parts: list[str], target_words: int) -> None:
        """Append tags drawn from `pools` until `parts` hold `target_words` words, avoiding repeats."""
        words = sum(len(p.split()) for p in parts)
        while words < target_words:
            pool = pools[int(self._u() * len(pools))]
            tag = self._pick(pool)
            for _ in range(3):
                if tag not in parts:
                    break
                tag = self._pick(pool)
            parts.append(tag)
            words += len(tag.split())

    # --- prompt kinds ------------------------------------------------------------------------------
    def _bare(self) -> str:
        if self._chance(0.2):
            return self._pick(W.PLURAL_SUBJECTS)
        noun, _ = self._subject()
        r = self._u()
        if r < 0.4:
            return noun
        if r < 0.8:
            return _with_article(noun)
        return f"the {noun}"

    def _training(self) -> str:
        noun, kind = self._subject()
        phrase = self._noun_phrase(noun, kind, 1) if self._chance(0.3) else noun
        return self._pick(W.TRAINING_TEMPLATES).format(phrase)

    def _short(self) -> str:
        noun, kind = self._subject()
        np = _with_article(self._noun_phrase(noun, kind, 2))
        r = self._u()
        if r < 0.35:
            return np
        if r < 0.6:
            return f"{np} {self._pick(W.PLACES)}"
        if r < 0.8:
            medium = self._pick(W.ART_MEDIA)
            return f"{_with_article(medium)} of {np}" if self._chance(0.5) else f"{medium} of {np}"
        return f"{np}, {self._pick(W.PHOTO_PHRASES)}"

    def _caption_prompt(self) -> str:
        r = self._u()
        if r < 0.55:
            text = self._caption()
        elif r < 0.7:
            (n1, k1), (n2, k2) = self._subject(), self._subject()
            a = _with_article(self._noun_phrase(n1, k1, 1))
            b = _with_article(self._noun_phrase(n2, k2, 1))
            link = self._pick(("and", "next to", "with", "behind", "on top of", "playing with"))
            text = f"{a} {link} {b} {self._pick(W.PLACES)}"
        elif r < 0.85:
            count = self._pick(("two", "three", "several", "many", "a group of", "a pair of"))
            text = f"{count} {self._pick(W.PLURAL_SUBJECTS)} {self._pick(W.PLACES)}"
            if self._chance(0.4):
                text += f" {self._pick(W.TIMES)}"
        else:
            text = f"there is {self._caption(1)}"
        if self._chance(0.25):
            text = text[:1].upper() + text[1:] + "."
        return text

    def _long(self) -> str:
        """Multi-clause description with commas, sometimes two sentences, then tags; ~20-70 words."""
        target = self._int(18, 70)
        parts = [self._caption(3), *self._distinct(W.DETAILS, self._int(1, 3))]
        text = ", ".join(parts)
        if self._chance(0.35):
            # A second sentence, as in long human-written captions.
            noun, kind = self._subject()
            second = f"{_with_article(self._noun_phrase(noun, kind, 2))} {self._action(kind)} nearby"
            text += ". " + second[:1].upper() + second[1:]
        pools = (W.PHOTO_PHRASES, W.QUALITY_TAGS) if self._chance(0.6) else (W.PHOTO_PHRASES,)
        tags = [text]
        self._tags(pools, tags, target)
        return ", ".join(tags)

    def _art(self) -> str:
        """'oil painting of ..., style, trending, highly detailed' with a varying number of tags."""
        target = self._int(8, 65)
        noun, kind = self._subject()
        np = _with_article(self._noun_phrase(noun, kind, 3))
        subject = f"{np} {self._action(kind)}" if self._chance(0.5) else np
        if self._chance(0.6):
            subject += f" {self._pick(W.PLACES)}"
        medium = self._pick(W.ART_MEDIA)
        head = f"{medium} of {subject}" if self._chance(0.7) else f"{subject}, {medium}"
        parts = [head]
        parts.extend(self._distinct(W.ART_STYLES, self._int(0, 2)))
        self._tags((W.QUALITY_TAGS,), parts, target)
        return ", ".join(parts)

    def _tag_list(self) -> str:
        """Booru-style comma lists: nouns, attributes and tags without sentence structure."""
        target = self._int(6, 55)
        noun, kind = self._subject()
        parts = [self._noun_phrase(noun, kind, 2)]
        pools = (W.ADJECTIVES, W.COLORS, W.PLACES, W.TIMES, W.ART_STYLES, W.QUALITY_TAGS, W.PHOTO_PHRASES)
        self._tags(pools, parts, target)
        return ", ".join(parts)

    _KINDS = (
        ("_bare", 0.06),
        ("_training", 0.10),
        ("_short", 0.14),
        ("_caption_prompt", 0.25),
        ("_long", 0.20),
        ("_art", 0.15),
        ("_tag_list", 0.10),
    )

    def prompt(self) -> str:
        x = self._u()
        for name, weight in self._KINDS:
            if x < weight:
                return getattr(self, name)()
            x -= weight
        return self._tag_list()


def prompt_corpus(n: int = 4000, seed: int = 0) -> list[str]:
    """`n` distinct generated prompts, identical for the same (n, seed) in any process.

    Duplicates are skipped (they would only reweight C); if the generator cannot find `n` distinct
    prompts in a reasonable number of draws, the rest are filled with repeats rather than looping.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    gen = _Generator(seed)
    seen: set[str] = set()
    out: list[str] = []
    draws = 0
    while len(out) < n:
        p = gen.prompt()
        draws += 1
        if p in seen and draws < 50 * n:
            continue
        seen.add(p)
        out.append(p)
    return out
