"""Concepts as applied to a model: per-concept gate settings and the per-projection plans.

One `ConceptSet` serves every cross-attention layer of a patched model: the gated edit depends
only on the concepts (i*, u, β, τ), so it is built once per device and shared; only the targets
differ per layer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from .concept import Concept
from .gated_edit import GatedRank1Edit

Projection = Literal["k", "v"]
log = logging.getLogger("comfyui-perfusion")


@dataclass(frozen=True)
class AppliedConcept:
    """A concept with the gate settings it is used with at inference."""

    concept: Concept
    beta: float  # at the first sampling step (all steps without a schedule)
    tau: float
    global_lock: bool = False  # K sees the superclass prompt instead of a K edit (docs/method.md §5)
    key_edit: bool = True  # False: K unedited (only for concepts trained without the lock, an ablation)
    beta_end: float | None = None  # at the last step, reached linearly; None: no schedule


@dataclass(frozen=True)
class ProjectionPlan:
    """What one K or V projection of one layer needs for its edit.

    Exactly one of `target_inputs` / `target_outputs` is set: key-locked K targets are the
    projection's own W applied to the superclass encodings; V targets are stored vectors.
    """

    edit: GatedRank1Edit
    target_inputs: torch.Tensor | None  # (J, D)
    target_outputs: torch.Tensor | None  # (J, d)


class PlanSource(Protocol):
    """Anything that can say how a projection is edited (inference sets, training state)."""

    def plan(self, layer: str, kind: Projection, device: torch.device) -> ProjectionPlan | None: ...


def _groups(
    applied: tuple[AppliedConcept, ...],
    linked: Callable[[int, int], bool],
    new_from: int,
    member: Callable[[AppliedConcept], bool] | None = None,
) -> list[list[int]]:
    """Indices of the concepts (those `member` admits) joined through `linked(j, k)`, j < k: each group
    of two or more that holds a concept from index `new_from` on, in order. Why groups, not pairs:
    sixteen concepts of one superclass are one problem, not 120 warnings."""
    groups: list[list[int]] = []
    for k, a in enumerate(applied):
        if member is not None and not member(a):
            continue
        joined = [g for g in groups if any(linked(j, k) for j in g)]
        groups = [g for g in groups if g not in joined] + [sorted([j for g in joined for j in g] + [k])]
    return [g for g in sorted(groups) if len(g) > 1 and g[-1] >= new_from]


def crosstalk_warnings(applied: tuple[AppliedConcept, ...], new_from: int = 0) -> list[str]:
    """One warning per group of concepts joined by a gate that opens (g ≥ ½) on another's i*, among
    the groups that hold a concept from index `new_from` on (earlier ones were warned about before).

    Why: concepts of one superclass trained briefly keep i* near the superclass encoding, so the gate
    cannot tell their words apart: each word then brings both concepts, and their joint projection
    treats them as one direction (gated_edit._projection_inverse).
    """
    if len(applied) < 2:
        return []
    i_star = torch.stack([a.concept.i_star for a in applied]).double()
    u = torch.stack([a.concept.u for a in applied]).double()
    m = u @ i_star.T
    relevance = (m / torch.diagonal(m)[:, None]).tolist()  # [k][j]: r_k(i*_j), 1 on the diagonal
    beta = [a.beta for a in applied]

    def opens(j: int, k: int) -> bool:
        return relevance[k][j] >= beta[k] or relevance[j][k] >= beta[j]

    out = []
    for group in _groups(applied, opens, new_from):
        reads = [(relevance[k][j], beta[k]) for k in group for j in group if j != k]
        r, b = max(reads, key=lambda rb: rb[0] - rb[1])
        out.append(
            f"Perfusion concepts {_listed([applied[k].concept.word for k in group])} have nearly the "
            f"same target input i* (a gate reads another's word as its own: relevance {r:.3f} against "
            f"bias {b:g}), so each word brings the others' concepts. Train them longer (i* starts at "
            "the superclass encoding) or from different superclass words, apply them one at a time, "
            "or raise bias above that relevance."
        )
    return out


IDENTICAL_KEY_ADVICE = (
    "train one of them from another superclass word, and set key_lock to global for both (each word "
    "then keys from its own place in the prompt)"
)
_SAME_KEY_COSINE = 0.9999  # superclass encodings this close give keys no attention can tell apart


def _listed(words: list[str]) -> str:
    quoted = [f"'{w}'" for w in words]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def identical_key_warning(words: list[str], superclass: str) -> str:
    """The one wording of the identical-key warning (`superclass`: the shared word, or the words)."""
    return (
        f"Perfusion concepts {_listed(words)} share the superclass {superclass}: they will get "
        "identical keys under the local key lock (each word's key is W_K applied to the superclass "
        "encoding), so cross-attention cannot tell them apart and one image mixes them. To use them "
        f"together, {IDENTICAL_KEY_ADVICE}."
    )


def _superclass_word(a: AppliedConcept) -> str:
    return a.concept.info.superclass.strip().lower()  # CLIP's tokenizer lowercases and strips


def _same_direction(x: torch.Tensor, y: torch.Tensor) -> bool:
    if x.shape != y.shape:
        return False
    x, y = x.double().flatten(), y.double().flatten()
    norms = float(x.norm() * y.norm())
    return norms > 0 and float(x @ y) / norms > _SAME_KEY_COSINE


def _same_key(a: AppliedConcept, b: AppliedConcept) -> bool:
    return _superclass_word(a) == _superclass_word(b) or _same_direction(
        a.concept.superclass_encoding, b.concept.superclass_encoding
    )


def identical_key_warnings(applied: tuple[AppliedConcept, ...], new_from: int = 0) -> list[str]:
    """One warning per group of concepts that lock their keys locally to one superclass, among the
    groups that hold a concept from index `new_from` on (earlier groups were warned about before).

    Why: under the local key lock a concept's K edit maps its word to W_K · (superclass encoding), so
    concepts of one superclass give their words the same key: every image position attends to them
    alike, so their values blend wherever either is drawn. The same superclass word, or superclass
    encodings that coincide (cosine > 0.9999) under different words, count as one. Global key lock
    (keys from each word's own place in the prompt) and no key edit do not warn.
    """
    out = []
    locked = _groups(
        applied,
        lambda j, k: _same_key(applied[j], applied[k]),
        new_from,
        member=lambda a: a.key_edit and not a.global_lock,
    )
    for group in locked:
        members = [applied[k] for k in group]
        words = list(dict.fromkeys(a.concept.info.superclass.strip() for a in members))
        if len({_superclass_word(a) for a in members}) == 1:
            superclass = f"'{words[0]}'"
        else:
            superclass = f"encoding (the superclass words {_listed(words)} encode alike)"
        out.append(identical_key_warning([a.concept.word for a in members], superclass))
    return out


class ConceptSet:
    """An immutable, ordered set of applied concepts; caches device copies of its tensors."""

    def __init__(self, applied: tuple[AppliedConcept, ...], new_from: int = 0) -> None:
        """`new_from`: where the concepts this set adds to an earlier one start (crosstalk_warnings,
        identical_key_warnings: each is warned about when one of its concepts is added)."""
        words = [a.concept.word.lower() for a in applied]
        if len(set(words)) != len(words):
            raise ValueError(f"the same concept word is applied twice: {words}")
        widths = {a.concept.encoder_width for a in applied}
        if len(widths) > 1:
            raise ValueError("concepts from text encoders of different widths cannot be combined")
        self.applied = applied
        for warning in crosstalk_warnings(applied, new_from) + identical_key_warnings(applied, new_from):
            log.warning(warning)
        self._edits: dict[tuple[Projection, str], GatedRank1Edit | None] = {}
        self._tensors: dict[tuple[str, str, str], torch.Tensor] = {}

    def extended(self, more: tuple[AppliedConcept, ...]) -> ConceptSet:
        return ConceptSet(self.applied + more, new_from=len(self.applied))

    def members(self, kind: Projection) -> tuple[AppliedConcept, ...]:
        """Concepts that edit this projection: all for V; K only where the lock is local and on."""
        if kind == "v":
            return self.applied
        return tuple(a for a in self.applied if a.key_edit and not a.global_lock)

    @property
    def has_key_edits(self) -> bool:
        return bool(self.members("k"))

    @property
    def has_schedule(self) -> bool:
        return any(a.beta_end is not None and a.beta_end != a.beta for a in self.applied)

    @property
    def has_global_lock(self) -> bool:
        return any(a.global_lock for a in self.applied)

    def _edit(self, kind: Projection, device: torch.device) -> GatedRank1Edit | None:
        key = (kind, str(device))
        if key not in self._edits:
            members = self.members(kind)
            if not members:
                self._edits[key] = None
            else:
                scheduled = any(a.beta_end is not None for a in members)
                edit = GatedRank1Edit(
                    torch.stack([a.concept.i_star for a in members]),
                    torch.stack([a.concept.u for a in members]),
                    [a.beta for a in members],
                    [a.tau for a in members],
                    [a.beta if a.beta_end is None else a.beta_end for a in members] if scheduled else None,
                )
                self._edits[key] = edit.to(device)
        return self._edits[key]

    def _stacked(self, name: str, kind: Projection, device: torch.device, layer: str = "") -> torch.Tensor:
        key = (name + layer, kind, str(device))
        if key not in self._tensors:
            members = self.members(kind)
            if name == "superclass_encoding":
                rows = [a.concept.superclass_encoding for a in members]
            else:
                rows = [a.concept.v_targets[layer] for a in members]
            self._tensors[key] = torch.stack([r.float() for r in rows]).to(device)
        return self._tensors[key]

    def gates(self, encodings: torch.Tensor, progress: float | None = None) -> torch.Tensor:
        """Each concept's gate g_j on each token encoding: (..., D) -> (..., J), in `applied` order,
        as the V edits open them at sampling `progress` (None: the first step)."""
        return self._edit("v", encodings.device).gates(encodings, progress)

    def plan(self, layer: str, kind: Projection, device: torch.device) -> ProjectionPlan | None:
        edit = self._edit(kind, device)
        if edit is None:
            return None
        if kind == "k":
            return ProjectionPlan(edit, self._stacked("superclass_encoding", kind, device), None)
        return ProjectionPlan(edit, None, self._stacked("v_target", kind, device, layer))
