"""Bounded, allocation-free parsing of a safetensors header.

Why this exists: a concept file is something users download and share. Before any tensor is
materialised we want to know, from a small header we parsed ourselves, that every size in it is sane
and consistent with the bytes actually on disk. Nothing here allocates memory proportional to a
number read from the file.

Layout (safetensors): 8-byte little-endian header length N, N bytes of UTF-8 JSON (optionally padded
with spaces), then the data region. The JSON maps tensor names to
``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the data region) and may
hold ``"__metadata__": {str: str}``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

HEADER_LENGTH_BYTES = 8
MAX_HEADER_BYTES = 1 * 2**20  # a concept header is a few KB; 1 MiB is generous
MAX_TENSOR_ELEMENTS = 16384  # the widest vector we expect is a 2048/1280-wide projection, with headroom
MAX_TENSORS = 4096

# Allowed storage dtypes and their item sizes. Anything else (ints, bools, F64, F8, ...) is refused.
DTYPE_ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2}

PICKLE_MAGIC_PREFIX = b"\x80"  # pickle protocol 2+ starts with PROTO (0x80) then the protocol number
ZIP_MAGIC_PREFIXES = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")  # torch.save() writes zip archives


class HeaderError(ValueError):
    """A defect found in the header; `kind` is a short machine-readable class of defect."""

    def __init__(self, kind: str, defect: str):
        super().__init__(defect)
        self.kind = kind
        self.defect = defect


@dataclass(frozen=True)
class TensorEntry:
    """One validated header entry: a 1-D tensor stored at [begin, end) of the data region."""

    name: str
    dtype: str
    length: int
    begin: int
    end: int


@dataclass(frozen=True)
class ParsedHeader:
    """The validated header: entries in header order, the string metadata, and the data region size."""

    entries: dict[str, TensorEntry]
    metadata: dict[str, str] | None
    header_length: int
    data_length: int


def sniff_foreign_format(prefix: bytes) -> str | None:
    """Name the format of a file that is clearly not safetensors (pickle, zip), else None.

    Only consulted once the safetensors reading of the first bytes has failed: a valid header length
    can legitimately start with 0x80 (e.g. 640 = 0x280), so this is a diagnosis, not a gate.
    """
    if prefix[:1] == PICKLE_MAGIC_PREFIX and len(prefix) >= 2 and 2 <= prefix[1] <= 5:
        return f"a Python pickle (protocol {prefix[1]})"
    if any(prefix.startswith(m) for m in ZIP_MAGIC_PREFIXES):
        return "a zip archive (the format torch.save() writes)"
    return None


def _foreign(prefix: bytes) -> HeaderError | None:
    what = sniff_foreign_format(prefix)
    if what is None:
        return None
    return HeaderError(
        "pickle",
        f"it is {what}, not safetensors; pickled files can run code when loaded, so it is never "
        "opened. Re-export the concept as .safetensors",
    )


def read_header_length(prefix: bytes, file_size: int, *, max_header_bytes: int = MAX_HEADER_BYTES) -> int:
    """Validate the 8-byte length prefix against the real file size before reading the header."""
    if file_size == 0:
        raise HeaderError("empty", "the file is empty (0 bytes)")
    if file_size <= HEADER_LENGTH_BYTES:
        foreign = _foreign(prefix)
        if foreign is not None:
            raise foreign
        raise HeaderError(
            "truncated", f"the file has only {file_size} bytes, too short to hold a safetensors header"
        )
    n = int.from_bytes(prefix[:HEADER_LENGTH_BYTES], "little", signed=False)
    available = file_size - HEADER_LENGTH_BYTES
    if n > max_header_bytes or n > available or n < 2:
        foreign = _foreign(prefix)
        if foreign is not None:
            raise foreign
    if n > max_header_bytes:
        raise HeaderError(
            "header_length",
            f"header length field says {n} bytes (limit {max_header_bytes}); the file is corrupt",
        )
    if n > available:
        raise HeaderError(
            "truncated",
            f"header length field says {n} bytes but only {available} bytes follow it "
            "(the file is truncated or its header length is corrupt)",
        )
    if n < 2:
        raise HeaderError("header_length", f"header length field says {n} bytes, too small for a JSON header")
    return n


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise HeaderError("header_json", f"header JSON repeats the key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> float:
    raise HeaderError("header_json", f"header JSON contains the non-standard constant {name}")


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def parse_header_json(raw: bytes) -> dict[str, object]:
    """Decode the header bytes as one strict JSON object (no duplicate keys, no NaN constants)."""
    prefix = raw[:8]
    if raw[:1] != b"{":
        foreign = _foreign(prefix)
        if foreign is not None:
            raise foreign
        raise HeaderError("header_json", "header does not start with '{'; this is not a safetensors file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise HeaderError(
            "header_json", f"header is not valid UTF-8 ({e.reason} at byte {e.start})"
        ) from None
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant)
    except HeaderError:
        raise
    except json.JSONDecodeError as e:
        raise HeaderError("header_json", f"header is not valid JSON ({e.msg} at character {e.pos})") from None
    except (ValueError, RecursionError) as e:  # e.g. integers with too many digits, absurd nesting
        raise HeaderError("header_json", f"header JSON cannot be parsed ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise HeaderError("header_json", f"header JSON is a {type(obj).__name__}, not an object")
    return obj


def _validate_entry(name: str, spec: object, data_length: int) -> TensorEntry:
    if not isinstance(spec, dict):
        raise HeaderError("header_json", f"header entry for tensor {name!r} is not an object")
    if set(spec) != {"dtype", "shape", "data_offsets"}:
        raise HeaderError(
            "header_json",
            f"header entry for tensor {name!r} must have exactly dtype, shape and data_offsets "
            f"(has {sorted(spec)[:8]})",
        )
    dtype = spec["dtype"]
    if not isinstance(dtype, str) or dtype not in DTYPE_ITEMSIZE:
        shown = dtype if isinstance(dtype, str) else type(dtype).__name__
        raise HeaderError(
            "dtype", f"tensor {name!r} has dtype {str(shown)[:32]!r} (allowed: {', '.join(DTYPE_ITEMSIZE)})"
        )
    shape = spec["shape"]
    if not isinstance(shape, list) or not all(_is_int(d) for d in shape):
        raise HeaderError("shape", f"tensor {name!r} has a shape that is not a list of integers")
    if len(shape) != 1:
        raise HeaderError(
            "shape", f"tensor {name!r} has {len(shape)} dimensions; every stored tensor is a vector"
        )
    (length,) = shape
    if length < 1:
        raise HeaderError("shape", f"tensor {name!r} has length {length}; it must be at least 1")
    if length > MAX_TENSOR_ELEMENTS:
        raise HeaderError(
            "shape", f"header declares tensor {name!r} with {length} elements (limit {MAX_TENSOR_ELEMENTS})"
        )
    offsets = spec["data_offsets"]
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets):
        raise HeaderError("offsets", f"tensor {name!r} has data_offsets that are not two integers")
    begin, end = offsets
    if begin < 0 or end < begin:
        raise HeaderError("offsets", f"tensor {name!r} has invalid data_offsets [{begin}, {end}]")
    nbytes = length * DTYPE_ITEMSIZE[dtype]
    if end - begin != nbytes:
        raise HeaderError(
            "offsets",
            f"tensor {name!r} ({dtype}, {length} elements) needs {nbytes} bytes but its data_offsets "
            f"span {end - begin}",
        )
    if end > data_length:
        raise HeaderError(
            "truncated",
            f"tensor {name!r} ends at data byte {end} but the file's data region has only {data_length} bytes "
            "(the file is truncated)",
        )
    return TensorEntry(name=name, dtype=dtype, length=length, begin=begin, end=end)


def validate_header(obj: dict[str, object], header_length: int, data_length: int) -> ParsedHeader:
    """Check every entry and that the entries tile the data region exactly (no gaps, no overlap)."""
    metadata_obj = obj.get("__metadata__")
    metadata: dict[str, str] | None = None
    if "__metadata__" in obj:
        if not isinstance(metadata_obj, dict) or not all(isinstance(v, str) for v in metadata_obj.values()):
            raise HeaderError("metadata", "the header's __metadata__ must be an object of string values")
        metadata = dict(metadata_obj)
    names = [k for k in obj if k != "__metadata__"]
    if len(names) > MAX_TENSORS:
        raise HeaderError("extra_tensor", f"header declares {len(names)} tensors (limit {MAX_TENSORS})")
    entries = {name: _validate_entry(name, obj[name], data_length) for name in names}
    cursor = 0
    for entry in sorted(entries.values(), key=lambda e: (e.begin, e.end)):
        if entry.begin != cursor:
            what = "overlaps the previous tensor" if entry.begin < cursor else "leaves a gap before it"
            raise HeaderError(
                "offsets",
                f"tensor {entry.name!r} starts at data byte {entry.begin}, which {what} (expected {cursor})",
            )
        cursor = entry.end
    if cursor != data_length:
        raise HeaderError(
            "offsets",
            f"tensors cover {cursor} bytes but the data region holds {data_length} (stray trailing bytes)",
        )
    return ParsedHeader(
        entries=entries, metadata=metadata, header_length=header_length, data_length=data_length
    )


def finite_float(text: str) -> float:
    """Parse a metadata number; raises ValueError unless it is a finite float."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not finite")
    return value
