"""Is a concept file's content the content that was written, and does it still make a valid gate?

Why: a flipped bit in a downloaded or copied file can leave every size and field well formed, so the
format checks pass and the file silently loads as a different concept (or, in `u`, is refused only at
sampling time with no file name). Two cheap checks close that gap at load time:

* a checksum over the tensors and the metadata, written by `save_concept`; it is canonical (sorted
  names and keys, raw tensor bytes), so it does not depend on how safetensors orders the header;
* the gate invariant every trained concept satisfies: u = C⁻¹ i* with C positive definite, so the
  energy i*ᵀu is positive, and the gate's coefficients u / (i*ᵀu) are finite in float32. (u = C⁻¹ i*
  itself cannot be rechecked without C.)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence

import torch

from .gated_edit import GatedRank1Edit

__all__ = ["CHECKSUM_KEY", "checksum_format_defect", "content_checksum", "gate_defect"]

CHECKSUM_KEY = "checksum"  # metadata key; optional on load (files written before it existed)
_ALGORITHM = "sha256"
_CHECKSUM = re.compile(rf"{_ALGORITHM}:[0-9a-f]{{64}}")
_DOMAIN = b"perfusion-concept checksum v1\x00"


def _text(value: str) -> bytes:
    # Header JSON may carry lone surrogates (escaped "\ud800"); hash them rather than fail.
    return value.encode("utf-8", "surrogatepass")


def content_checksum(
    tensors: Iterable[tuple[str, str, Sequence[int], bytes]], metadata: Mapping[str, str]
) -> str:
    """ "sha256:<hex>" over sorted (name, dtype, shape, raw bytes) and sorted metadata items.

    The checksum entry itself is left out. Every field is length-prefixed, so no two different
    contents hash the same sequence of bytes.
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
    for key, value in sorted(metadata.items(), key=lambda kv: _text(kv[0])):
        if key != CHECKSUM_KEY:
            field(_text(key))
            field(_text(value))
    return f"{_ALGORITHM}:{digest.hexdigest()}"


def checksum_format_defect(recorded: str) -> str | None:
    """Plain words for a recorded checksum that is not one this pack writes, else None."""
    if _CHECKSUM.fullmatch(recorded):
        return None
    return (
        f"its checksum {recorded[:80]!r} is malformed (expected '{_ALGORITHM}:' and 64 hex digits); "
        "the file is damaged"
    )


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
