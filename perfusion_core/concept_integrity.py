"""Is a concept file's content the content that was written, and does it still make a valid gate?

Why: a flipped bit in a downloaded or copied file can leave every size and field well formed, so the
format checks pass and the file silently loads as a different concept (or, in `u`, is refused only at
sampling time with no file name). Two cheap checks close that gap at load time:

* a checksum over the tensors and the pack's own metadata, written by `save_concept`; it is canonical
  (sorted names and keys, raw tensor bytes), so it does not depend on how safetensors orders the
  header. Keys another tool adds when it re-saves a file are not the pack's and are left out: the
  file names the keys its checksum covers (`checksum_covers`); files written before it existed
  covered every key, which were the pack's `EARLIER_KEYS`;
* the gate invariant every trained concept satisfies: u = C⁻¹ i* with C positive definite, so the
  energy i*ᵀu is positive, and the gate's coefficients u / (i*ᵀu) are finite in float32. (u = C⁻¹ i*
  itself cannot be rechecked without C.)
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence

import torch

from .gated_edit import GatedRank1Edit

__all__ = [
    "CHECKSUM_KEY",
    "COVERED_KEY",
    "EARLIER_KEYS",
    "checksum_defect",
    "content_checksum",
    "covered_keys",
    "gate_defect",
]

CHECKSUM_KEY = "checksum"  # metadata key; optional on load in format 1 (files written before it existed)
COVERED_KEY = "checksum_covers"  # JSON list of the other metadata keys the checksum covers
# Every metadata key the pack wrote before it recorded COVERED_KEY: what those files' checksums cover.
EARLIER_KEYS = frozenset(
    "format format_version word superclass model_family encoder_fingerprint layer_names layer_widths "
    "encoder_width train_beta train_tau suggested_beta_local suggested_beta_global suggested_tau steps "
    "training_settings clip_layer training_images text_encoders".split()
)
_ALGORITHM = "sha256"
_CHECKSUM = re.compile(rf"{_ALGORITHM}:[0-9a-f]{{64}}")
_DOMAIN = b"perfusion-concept checksum v1\x00"


def _text(value: str) -> bytes:
    # Header JSON may carry lone surrogates (escaped "\ud800"); hash them rather than fail.
    return value.encode("utf-8", "surrogatepass")


def _listed_keys(metadata: Mapping[str, str]) -> list[str] | None:
    """COVERED_KEY's list of key names, or None when it is not a JSON list of strings."""
    try:
        keys = json.loads(metadata[COVERED_KEY])
    except (ValueError, RecursionError):
        return None
    return keys if isinstance(keys, list) and all(isinstance(k, str) for k in keys) else None


def covered_keys(metadata: Mapping[str, str]) -> frozenset[str]:
    """The metadata keys a file's checksum covers: those it lists (COVERED_KEY itself included), or
    for files from before the list, the pack's keys of then. A listed key that is absent is left out,
    so its absence changes the checksum; a malformed list is `checksum_defect`'s to report."""
    if COVERED_KEY not in metadata:
        return EARLIER_KEYS & metadata.keys()
    listed = _listed_keys(metadata) or []
    return frozenset(listed).union([COVERED_KEY]) & metadata.keys()


def content_checksum(
    tensors: Iterable[tuple[str, str, Sequence[int], bytes]], metadata: Mapping[str, str]
) -> str:
    """ "sha256:<hex>" over sorted (name, dtype, shape, raw bytes) and the sorted metadata items that
    `covered_keys` names.

    The checksum entry itself is never covered. Every field is length-prefixed, so no two different
    contents hash the same sequence of bytes. With no key outside the pack's, this is the checksum
    earlier versions wrote and verify (they covered every key).
    """
    digest = hashlib.sha256(_DOMAIN)

    def field(data: bytes) -> None:
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)

    for name, dtype, shape, raw in sorted(tensors, key=lambda t: _text(t[0])):
        field(_text(name))
        field(_text(dtype))
        field(",".join(str(int(n)) for n in shape).encode("ascii"))
        field(raw)
    for key in sorted(covered_keys(metadata) - {CHECKSUM_KEY}, key=_text):
        field(_text(key))
        field(_text(metadata[key]))
    return f"{_ALGORITHM}:{digest.hexdigest()}"


def checksum_defect(metadata: Mapping[str, str]) -> str | None:
    """Plain words for a recorded checksum (or list of the keys it covers) that is not one this pack
    writes, else None."""
    recorded = metadata[CHECKSUM_KEY]
    if not _CHECKSUM.fullmatch(recorded):
        return (
            f"its checksum {recorded[:80]!r} is malformed (expected '{_ALGORITHM}:' and 64 hex digits); "
            "the file is damaged"
        )
    if COVERED_KEY in metadata and _listed_keys(metadata) is None:
        return f"its metadata {COVERED_KEY!r} is not a JSON list of key names; the file is damaged"
    return None


def gate_defect(i_star: torch.Tensor, u: torch.Tensor) -> str | None:
    """Plain words for why i* and u cannot come from a trained concept's gate, else None."""
    energy = float(i_star.double() @ u.double())
    if not energy > 0:
        return (
            f"its energy i*ᵀu is {energy:.3g}, but u = C⁻¹ i* makes it positive for every trained "
            "concept; the file is damaged or was not written by a Perfusion trainer"
        )
    edit = GatedRank1Edit(i_star, u, 0.0, 1.0)
    if not bool(torch.isfinite(edit.mixing).all()):
        return (
            f"its energy i*ᵀu is {energy:.3g}, so small that the gate's coefficients u / (i*ᵀu) "
            "overflow; the file is damaged or was not written by a Perfusion trainer"
        )
    return None
