"""Writing concept files (docs/method.md §7): sealed with a checksum, proven readable, written atomically.

Writing is atomic (`atomic_write`), so a crash or a full disk never leaves a half-written concept
where a good one used to be; and the bytes are decoded by the reader before they are written, so the
pack never writes a concept file it would refuse to load.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import safetensors.torch
import torch

from .atomic_write import UnwritableFile, refuse_existing, write_atomic
from .concept import Concept
from .concept_file import (
    FIXED_TENSORS,
    ConceptFileError,
    decode_concept,
    file_checksum,
    parse_concept_header,
    tensor_name,
)
from .concept_integrity import CHECKSUM_KEY, COVERED_KEY
from .concept_metadata import build_metadata

__all__ = ["ALLOWED_V_DTYPES", "save_concept"]

ALLOWED_V_DTYPES = (torch.float16, torch.float32, torch.bfloat16)
_WHAT = "Perfusion concept file"


def _serialize(concept: Concept, path: str | os.PathLike[str], v_dtype: torch.dtype) -> bytes:
    def fail(kind: str, defect: str) -> ConceptFileError:
        return ConceptFileError(path, defect, kind, writing=True)

    if v_dtype not in ALLOWED_V_DTYPES:
        raise fail("dtype", f"v_dtype {v_dtype} is not one of {', '.join(map(str, ALLOWED_V_DTYPES))}")
    tensors: dict[str, torch.Tensor] = {}
    for name in FIXED_TENSORS:
        t = getattr(concept, name)
        if not isinstance(t, torch.Tensor) or t.dim() != 1:
            raise fail("shape", f"{name} must be a 1-D tensor")
        tensors[name] = t.detach().to(device="cpu", dtype=torch.float32).contiguous()
    for layer, t in concept.v_targets.items():
        if not isinstance(t, torch.Tensor) or t.dim() != 1:
            raise fail("shape", f"V target of layer {layer!r} must be a 1-D tensor")
        tensors[tensor_name(layer)] = t.detach().to(device="cpu", dtype=v_dtype).contiguous()
    try:
        metadata = build_metadata(concept)
    except (TypeError, ValueError) as e:
        raise fail("metadata", f"concept metadata cannot be encoded ({e})") from None
    try:
        # Hash the bytes exactly as safetensors lays them out, then write them again, sealed. The
        # checksum covers the keys written here: keys a tool adds later are not the pack's.
        metadata[COVERED_KEY] = json.dumps(sorted(metadata), separators=(",", ":"))
        unsealed = safetensors.torch.save(tensors, metadata=metadata)
        metadata[CHECKSUM_KEY] = file_checksum(parse_concept_header(unsealed, len(unsealed), path), unsealed)
        data = safetensors.torch.save(tensors, metadata=metadata)
        # Refuse to write anything load_concept would reject (NaN, fp16 overflow, bad words, ...).
        decode_concept(data, len(data), path)
    except ConceptFileError as e:
        raise fail(e.kind, e.defect) from None
    return data


def save_concept(
    concept: Concept,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    v_dtype: torch.dtype = torch.float16,
) -> Path:
    """Write `concept` to `path` as a safetensors concept file and return the path.

    The four encoder-width vectors are stored in float32 (they define the gate and must be exact);
    V targets in `v_dtype` (float16 by default: halves the file, docs/method.md §7, and a rounding
    error of ~5e-4 relative is far below what training resolves). The write is atomic: the file either
    appears complete or not at all, and an existing file is left untouched on any failure. Raises
    FileExistsError if the file exists and `overwrite` is False (before the concept is checked),
    ConceptFileError if the concept would not load back (non-finite values, widths that disagree,
    malformed words) or the disk refuses the write (read-only folder, no space): every such error
    names the target file.
    """
    target = Path(path)
    refuse_existing(target, overwrite=overwrite, what=_WHAT)
    data = _serialize(concept, target, v_dtype)
    try:
        return write_atomic(data, target, overwrite=overwrite, what=_WHAT)
    except UnwritableFile as e:
        raise ConceptFileError(target, e.defect, "unwritable", writing=True) from None
