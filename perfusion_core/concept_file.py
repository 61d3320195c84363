"""Reading concept files (docs/method.md §7): safetensors only, never pickle.

Concept files are shared between users, so loading treats the file as hostile: the header is parsed
and validated by our own bounded code (`safetensors_header`, `concept_metadata`) before safetensors
materialises a single tensor, sizes are checked against the real file size before anything is read,
and every defect surfaces as one `ConceptFileError` that names the file and says what is wrong in
plain words. The writer (`concept_writer`) decodes what it wrote with the same code, so it never
writes a file this module would refuse.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch

from .concept import Concept, ConceptInfo
from .concept_integrity import CHECKSUM_KEY, checksum_defect, content_checksum, gate_defect
from .concept_metadata import ConceptMetadata, read_metadata
from .safetensors_header import (
    HEADER_LENGTH_BYTES,
    MAX_HEADER_BYTES,
    HeaderError,
    ParsedHeader,
    parse_header_json,
    read_header_length,
    validate_header,
)

__all__ = [
    "ConceptFileError",
    "ConceptFileInfo",
    "DEFAULT_MAX_BYTES",
    "FIXED_TENSORS",
    "V_TARGET_PREFIX",
    "decode_concept",
    "file_checksum",
    "load_concept",
    "parse_concept_header",
    "read_concept_metadata",
    "tensor_name",
]

FIXED_TENSORS = ("token_embedding", "i_star", "u", "superclass_encoding")
V_TARGET_PREFIX = "v_target."
DEFAULT_MAX_BYTES = 8 * 2**20  # an SDXL concept is ~200 KB; anything near this is not a concept
log = logging.getLogger("comfyui-perfusion")


class ConceptFileError(ValueError):
    """A concept file that cannot be read (or a concept that cannot be written), with the reason.

    `kind` is a short machine-readable defect class, e.g. "truncated", "header_length", "shape",
    "missing_tensor", "nonfinite", "metadata", "version", "pickle", "too_large", "checksum" (the
    content is not what was written: the file is damaged), "inconsistent" (the values cannot form a
    concept's gate).
    """

    def __init__(
        self, path: str | os.PathLike[str], defect: str, kind: str = "invalid", *, writing: bool = False
    ):
        self.path = os.fspath(path)
        self.defect = defect
        self.kind = kind
        self.writing = writing
        name = os.path.basename(self.path) or self.path
        if writing:
            message = f"Perfusion concept cannot be written to '{name}': {defect}"
        else:
            message = f"Perfusion concept file '{name}' is not usable: {defect}"
        super().__init__(message)


@dataclass(frozen=True)
class ConceptFileInfo:
    """What a UI needs to list a concept, read from the header alone (no tensor is loaded)."""

    path: Path
    format_version: str
    info: ConceptInfo
    encoder_width: int
    layers: dict[str, int]  # layer name -> width, in model order
    file_bytes: int

    @property
    def word(self) -> str:
        return self.info.word


def tensor_name(layer: str) -> str:
    """The name of `layer`'s V target in the file."""
    return V_TARGET_PREFIX + layer


def _read_bounded(path: str | os.PathLike[str], max_bytes: int, header_only: bool) -> tuple[bytes, int]:
    """Read the file (or just its header) without trusting any size from it.

    Returns (bytes, file_size). O_NONBLOCK keeps a FIFO from blocking the open; fstat then refuses
    anything that is not a regular file before a byte is read.
    """
    flags = (
        os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    )
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ConceptFileError(path, "the file does not exist", "not_found") from None
    except IsADirectoryError:
        raise ConceptFileError(path, "it is a directory, not a file", "not_a_file") from None
    except OSError as e:
        raise ConceptFileError(path, f"the file cannot be opened ({e.strerror or e})", "unreadable") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise ConceptFileError(path, f"it is {what}", "not_a_file")
        size = st.st_size
        if size > max_bytes:
            raise ConceptFileError(
                path,
                f"the file is {size} bytes, larger than any concept file (limit {max_bytes}); "
                "is it a checkpoint or LoRA?",
                "too_large",
            )
        with os.fdopen(os.dup(fd), "rb") as f:
            prefix = f.read(HEADER_LENGTH_BYTES)
            try:
                n = read_header_length(prefix, size)
            except HeaderError as e:
                raise ConceptFileError(path, e.defect, e.kind) from None
            want = n if header_only else size - HEADER_LENGTH_BYTES
            rest = f.read(want) if header_only else f.read(want + 1)  # +1: notice a file that grew
    except ConceptFileError:
        raise
    except OSError as e:
        raise ConceptFileError(path, f"the file cannot be read ({e.strerror or e})", "unreadable") from None
    finally:
        os.close(fd)
    data = prefix + rest
    expected = HEADER_LENGTH_BYTES + want
    if len(data) != expected:
        raise ConceptFileError(path, "the file changed size while it was being read", "unreadable")
    return data, size


def parse_concept_header(data: bytes, file_size: int, path: str | os.PathLike[str]) -> ParsedHeader:
    """The safetensors header at the start of `data`, every size in it checked against `file_size`."""
    try:
        n = read_header_length(data[:HEADER_LENGTH_BYTES], file_size, max_header_bytes=MAX_HEADER_BYTES)
        obj = parse_header_json(data[HEADER_LENGTH_BYTES : HEADER_LENGTH_BYTES + n])
        return validate_header(obj, n, file_size - HEADER_LENGTH_BYTES - n)
    except HeaderError as e:
        raise ConceptFileError(path, e.defect, e.kind) from None


def _check_checksum_entry(metadata: dict[str, str], version: str) -> None:
    """A checksum (and its list of keys) in the form the pack writes; every format-2 file has one."""
    if CHECKSUM_KEY in metadata:
        malformed = checksum_defect(metadata)
        if malformed:
            raise HeaderError("checksum", malformed)
    elif version != "1":
        raise HeaderError(
            "checksum",
            f"it is a format-{version} file without its '{CHECKSUM_KEY}' (the pack writes one into "
            "every such file), so it was altered or damaged; get a fresh copy or retrain",
        )


def _check_tensors(header: ParsedHeader, encoder_width: int, layers: dict[str, int]) -> None:
    """Exactly the fixed vectors plus one V target per listed layer, each as wide as the metadata says."""
    names = (*FIXED_TENSORS, *(tensor_name(n) for n in layers))
    present = set(header.entries)
    absent = [n for n in names if n not in present]
    if absent:
        more = f" and {len(absent) - 1} more" if len(absent) > 1 else ""
        raise HeaderError("missing_tensor", f"tensor {absent[0][:200]!r}{more} is missing")
    extra = sorted(present - set(names))
    if extra:
        more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
        raise HeaderError(
            "extra_tensor", f"unexpected tensor {extra[0][:200]!r}{more} (not one of the concept's tensors)"
        )
    for name in FIXED_TENSORS:
        got = header.entries[name].length
        if got != encoder_width:
            raise HeaderError(
                "width", f"tensor {name!r} has {got} elements but the text encoder is {encoder_width} wide"
            )
    for layer, width in layers.items():
        got = header.entries[tensor_name(layer)].length
        if got != width:
            raise HeaderError(
                "width", f"V target of layer {layer[:200]!r} has {got} elements; the layer is {width} wide"
            )


def _validate(header: ParsedHeader, path: str | os.PathLike[str]) -> ConceptMetadata:
    """The header's metadata, checked field by field and against the header's tensors."""
    try:
        metadata = read_metadata(header.metadata)
        _check_checksum_entry(header.metadata or {}, metadata.format_version)
        _check_tensors(header, metadata.encoder_width, metadata.layers)
    except HeaderError as e:
        raise ConceptFileError(path, e.defect, e.kind) from None
    return metadata


def file_checksum(header: ParsedHeader, data: bytes) -> str:
    """The canonical checksum of a parsed file's tensors (raw bytes) and the pack's metadata."""
    start = HEADER_LENGTH_BYTES + header.header_length
    tensors = (
        (e.name, e.dtype, (e.length,), data[start + e.begin : start + e.end]) for e in header.entries.values()
    )
    return content_checksum(tensors, header.metadata or {})


def _verify_integrity(
    header: ParsedHeader, data: bytes, concept: Concept, path: str | os.PathLike[str]
) -> None:
    """Refuse content that differs from what was written, or that cannot form the concept's gate."""
    recorded = (header.metadata or {}).get(CHECKSUM_KEY)
    if recorded is None:
        log.warning(
            "Perfusion concept file '%s' has no checksum (format 1, written by an older version of the "
            "pack): damage to it cannot be detected. Load it with 'Load Perfusion Concept File' and save it "
            "again with 'Save Perfusion Concept' to add one.",
            os.path.basename(os.fspath(path)) or os.fspath(path),
        )
    elif file_checksum(header, data) != recorded:
        raise ConceptFileError(
            path,
            "the file is damaged: its contents do not match the checksum written with it "
            "(a changed bit in the tensors or metadata); get a fresh copy or retrain",
            "checksum",
        )
    defect = gate_defect(concept.i_star, concept.u)
    if defect:
        raise ConceptFileError(path, defect, "inconsistent")


def decode_concept(data: bytes, file_size: int, path: str | os.PathLike[str]) -> Concept:
    """The concept in a whole file's bytes, or ConceptFileError naming `path` and the first defect."""
    header = parse_concept_header(data, file_size, path)
    metadata = _validate(header, path)
    # Every size is now proven small and consistent with the bytes we hold: let safetensors decode.
    try:
        raw = safetensors.torch.load(data)
    except Exception as e:  # safetensors raises its own error types; report them uniformly
        raise ConceptFileError(
            path, f"safetensors could not decode it ({str(e)[:200]})", "safetensors"
        ) from None
    tensors: dict[str, torch.Tensor] = {}
    for name, t in raw.items():
        t = t.to(torch.float32)
        if not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise ConceptFileError(
                path, f"tensor {name[:200]!r} contains {bad} NaN or infinite values", "nonfinite"
            )
        tensors[name] = t
    concept = Concept(
        info=metadata.info,
        token_embedding=tensors["token_embedding"],
        i_star=tensors["i_star"],
        u=tensors["u"],
        superclass_encoding=tensors["superclass_encoding"],
        v_targets={layer: tensors[tensor_name(layer)] for layer in metadata.layers},
    )
    _verify_integrity(header, data, concept, path)
    return concept


def load_concept(path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> Concept:
    """Load and fully validate a concept file; every problem raises ConceptFileError.

    Sizes are checked against the real file size and fixed caps before anything is allocated, the
    header is validated by our own code before safetensors sees the bytes, and tensors come back as
    float32 with NaN/Inf refused. Then the content must match the checksum written with it (a format-1
    file without one, from before checksums, loads with a warning; a format-2 file without one is
    refused) and must form a valid gate (i*ᵀu > 0).
    V targets are returned in the file's layer order (model order).
    """
    data, size = _read_bounded(path, max_bytes, header_only=False)
    return decode_concept(data, size, path)


def read_concept_metadata(
    path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES
) -> ConceptFileInfo:
    """Read and validate only the header (a few KB): word, model, layers, suggested settings.

    Cheap enough to call for every file in a folder when building a UI list; tensor values (NaN,
    the checksum, the gate) are only verified by load_concept.
    """
    data, size = _read_bounded(path, max_bytes, header_only=True)
    metadata = _validate(parse_concept_header(data, size, path), path)
    return ConceptFileInfo(
        path=Path(path),
        format_version=metadata.format_version,
        info=metadata.info,
        encoder_width=metadata.encoder_width,
        layers=metadata.layers,
        file_bytes=size,
    )
