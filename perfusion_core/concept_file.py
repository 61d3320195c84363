"""Reading and writing concept files (spec §7): safetensors only, never pickle.

Concept files are shared between users, so loading treats the file as hostile: the header is parsed
and validated by our own bounded code (`safetensors_header`) before safetensors materialises a single
tensor, sizes are checked against the real file size before anything is read, and every defect
surfaces as one `ConceptFileError` that names the file and says what is wrong in plain words.

Writing is atomic (temp file in the same directory, fsync, rename), so a crash or a full disk never
leaves a half-written concept where a good one used to be.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import torch

from .atomic_write import UnwritableFile, write_atomic
from .concept import FORMAT_VERSION, Concept, ConceptInfo
from .concept_integrity import CHECKSUM_KEY, COVERED_KEY, checksum_defect, content_checksum, gate_defect
from .safetensors_header import (
    HEADER_LENGTH_BYTES,
    MAX_HEADER_BYTES,
    MAX_TENSOR_ELEMENTS,
    HeaderError,
    ParsedHeader,
    finite_float,
    parse_header_json,
    read_header_length,
    validate_header,
)

__all__ = [
    "ConceptFileError",
    "ConceptFileInfo",
    "DEFAULT_MAX_BYTES",
    "FIXED_TENSORS",
    "FORMAT_MARKER",
    "SUPPORTED_FORMAT_VERSIONS",
    "V_TARGET_PREFIX",
    "load_concept",
    "read_concept_metadata",
    "save_concept",
]

FORMAT_MARKER = "perfusion-concept"  # metadata["format"]: tells a concept from a LoRA or checkpoint
SUPPORTED_FORMAT_VERSIONS = frozenset({"1", FORMAT_VERSION})  # 1: SD1.x/SD2.x files, one text encoder
FIXED_TENSORS = ("token_embedding", "i_star", "u", "superclass_encoding")
V_TARGET_PREFIX = "v_target."
DEFAULT_MAX_BYTES = 8 * 2**20  # an SDXL concept is ~200 KB; anything near this is not a concept
MAX_LAYERS = 1024
MAX_TEXT_ENCODERS = 8
MAX_WORD_CHARS = 100
MAX_TEXT_CHARS = 256
MAX_STEPS = 10**9
MAX_TRAINING_IMAGES = 10**7
MIN_CLIP_LAYER = -1024  # CLIP Set Last Layer counts from -1 (last) down; no text encoder is deeper
ALLOWED_V_DTYPES = (torch.float16, torch.float32, torch.bfloat16)
log = logging.getLogger("comfyui-perfusion")

_FLOAT_FIELDS = ("train_beta", "train_tau", "suggested_beta_local", "suggested_beta_global", "suggested_tau")
_TAU_FIELDS = ("train_tau", "suggested_tau")
_REQUIRED_METADATA = (
    "format",
    "format_version",
    "word",
    "superclass",
    "model_family",
    "encoder_fingerprint",
    "layer_names",
    "layer_widths",
    "encoder_width",
    *_FLOAT_FIELDS,
    "steps",
    "training_settings",
)


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


# --------------------------------------------------------------------------------------------- writing


def _tensor_name(layer: str) -> str:
    return V_TARGET_PREFIX + layer


def _fmt_float(x: float) -> str:
    return repr(float(x))  # shortest string that round-trips exactly


def _build_metadata(concept: Concept) -> dict[str, str]:
    info = concept.info
    return {
        "format": FORMAT_MARKER,
        "format_version": FORMAT_VERSION,
        "word": info.word,
        "superclass": info.superclass,
        "model_family": info.model_family,
        "encoder_fingerprint": info.encoder_fingerprint,
        "layer_names": json.dumps(list(concept.v_targets), ensure_ascii=False, separators=(",", ":")),
        "layer_widths": json.dumps(
            [int(t.shape[0]) if t.dim() == 1 else -1 for t in concept.v_targets.values()],
            separators=(",", ":"),
        ),
        "encoder_width": str(int(concept.i_star.shape[0]) if concept.i_star.dim() == 1 else -1),
        "train_beta": _fmt_float(info.train_beta),
        "train_tau": _fmt_float(info.train_tau),
        "suggested_beta_local": _fmt_float(info.suggested_beta_local),
        "suggested_beta_global": _fmt_float(info.suggested_beta_global),
        "suggested_tau": _fmt_float(info.suggested_tau),
        "steps": str(int(info.steps)),
        "training_settings": json.dumps(info.training_settings, ensure_ascii=False, separators=(",", ":")),
        **({} if info.clip_layer is None else {"clip_layer": str(int(info.clip_layer))}),
        **({} if info.training_images is None else {"training_images": str(int(info.training_images))}),
        # A concept read from a format-1 file does not know its encoder's name: it stays format 1.
        **(
            {"format_version": "1"}
            if info.text_encoders is None
            else {"text_encoders": json.dumps([list(e) for e in info.text_encoders], separators=(",", ":"))}
        ),
    }


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
        tensors[_tensor_name(layer)] = t.detach().to(device="cpu", dtype=v_dtype).contiguous()
    try:
        metadata = _build_metadata(concept)
    except (TypeError, ValueError) as e:
        raise fail("metadata", f"concept metadata cannot be encoded ({e})") from None
    try:
        # Hash the bytes exactly as safetensors lays them out, then write them again, sealed. The
        # checksum covers the keys written here: keys a tool adds later are not the pack's.
        metadata[COVERED_KEY] = json.dumps(sorted(metadata), separators=(",", ":"))
        unsealed = safetensors.torch.save(tensors, metadata=metadata)
        metadata[CHECKSUM_KEY] = _checksum(_parse(unsealed, len(unsealed), path), unsealed)
        data = safetensors.torch.save(tensors, metadata=metadata)
        # Refuse to write anything load_concept would reject (NaN, fp16 overflow, bad words, ...).
        _decode(data, len(data), path)
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
    V targets in `v_dtype` (float16 by default: halves the file, spec §7, and a rounding error of
    ~5e-4 relative is far below what training resolves). The write is atomic: the file either appears
    complete or not at all, and an existing file is left untouched on any failure. Raises
    FileExistsError if the file exists and `overwrite` is False, ConceptFileError if the concept would
    not load back (non-finite values, widths that disagree, malformed words) or the disk refuses
    the write (read-only folder, no space): every such error names the target file.
    """
    target = Path(path)
    if not overwrite and os.path.lexists(target):
        raise FileExistsError(f"{_WHAT} '{target}' already exists; pass overwrite=True to replace it")
    data = _serialize(concept, target, v_dtype)
    try:
        return write_atomic(data, target, overwrite=overwrite, what=_WHAT)
    except UnwritableFile as e:
        raise ConceptFileError(target, e.defect, "unwritable", writing=True) from None


_WHAT = "Perfusion concept file"


# --------------------------------------------------------------------------------------------- reading


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


def _parse(data: bytes, file_size: int, path: str | os.PathLike[str]) -> ParsedHeader:
    try:
        n = read_header_length(data[:HEADER_LENGTH_BYTES], file_size, max_header_bytes=MAX_HEADER_BYTES)
        obj = parse_header_json(data[HEADER_LENGTH_BYTES : HEADER_LENGTH_BYTES + n])
        return validate_header(obj, n, file_size - HEADER_LENGTH_BYTES - n)
    except HeaderError as e:
        raise ConceptFileError(path, e.defect, e.kind) from None


def _single_word(value: str, field: str) -> str:
    if not value:
        raise HeaderError("metadata", f"metadata {field!r} is empty")
    if len(value) > MAX_WORD_CHARS or not value.isprintable() or any(c.isspace() for c in value):
        raise HeaderError("metadata", f"metadata {field!r} must be a single word (got {value[:40]!r})")
    return value


def _reject_json_constant(name: str) -> object:
    raise ValueError(f"non-standard JSON constant {name}")


def _json_field(metadata: dict[str, str], field: str) -> object:
    try:
        return json.loads(metadata[field], parse_constant=_reject_json_constant)
    except (ValueError, RecursionError):
        raise HeaderError("metadata", f"metadata {field!r} is not valid JSON") from None


def _int_field(metadata: dict[str, str], field: str, lo: int, hi: int) -> int:
    text = metadata[field]
    if not re.fullmatch(r"-?[0-9]{1,18}", text):
        raise HeaderError("metadata", f"metadata {field!r} is not an integer (got {text[:40]!r})")
    value = int(text)
    if not lo <= value <= hi:
        raise HeaderError("metadata", f"metadata {field!r} is {value}, outside [{lo}, {hi}]")
    return value


def _text_encoders_field(metadata: dict[str, str], encoder_width: int) -> tuple[tuple[str, int], ...]:
    """metadata 'text_encoders': [[key, width], ...], widths adding up to the embedding's."""
    if "text_encoders" not in metadata:
        raise HeaderError("metadata", "metadata lacks 'text_encoders'")
    value = _json_field(metadata, "text_encoders")
    shape_ok = (
        isinstance(value, list)
        and 1 <= len(value) <= MAX_TEXT_ENCODERS
        and all(
            isinstance(e, list)
            and len(e) == 2
            and isinstance(e[0], str)
            and re.fullmatch(r"[A-Za-z0-9_]{1,32}", e[0])
            and isinstance(e[1], int)
            and not isinstance(e[1], bool)
            and e[1] >= 1
            for e in value
        )
    )
    if not shape_ok:
        raise HeaderError(
            "metadata",
            "metadata 'text_encoders' must be a JSON list of [name, width] pairs, e.g. [[\"l\",768]]",
        )
    encoders = tuple((key, width) for key, width in value)
    if len({key for key, _ in encoders}) != len(encoders):
        raise HeaderError("metadata", "metadata 'text_encoders' lists an encoder twice")
    if sum(width for _, width in encoders) != encoder_width:
        raise HeaderError(
            "width",
            f"metadata 'text_encoders' widths add up to {sum(w for _, w in encoders)}, but the word "
            f"embedding is {encoder_width} wide",
        )
    return encoders


def _validate_metadata(header: ParsedHeader) -> tuple[str, ConceptInfo, int, dict[str, int]]:
    """Check the metadata against the header's tensors; return (version, info, D, layers)."""
    metadata = header.metadata
    if metadata is None:
        raise HeaderError("metadata", "the header has no __metadata__; this is not a Perfusion concept file")
    if metadata.get("format") != FORMAT_MARKER:
        raise HeaderError(
            "metadata",
            f"metadata 'format' is {metadata.get('format', '(missing)')[:40]!r}, not {FORMAT_MARKER!r}; "
            "this safetensors file is not a Perfusion concept (a LoRA or checkpoint?)",
        )
    version = metadata.get("format_version")
    if version is None:
        raise HeaderError("version", "metadata has no 'format_version'")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise HeaderError(
            "version",
            f"format version {version[:20]!r} is not supported by this version of the node pack "
            f"(supported: {', '.join(sorted(SUPPORTED_FORMAT_VERSIONS))}); update comfyui-perfusion",
        )
    missing = [k for k in _REQUIRED_METADATA if k not in metadata]
    if missing:
        raise HeaderError("metadata", f"metadata lacks {', '.join(repr(k) for k in missing)}")
    word = _single_word(metadata["word"], "word")
    superclass = _single_word(metadata["superclass"], "superclass")
    family = metadata["model_family"]
    if not family or len(family) > MAX_TEXT_CHARS or not family.isprintable():
        raise HeaderError("metadata", "metadata 'model_family' must be a short non-empty printable string")
    fingerprint = metadata["encoder_fingerprint"]
    if len(fingerprint) > MAX_TEXT_CHARS or not fingerprint.isprintable():
        raise HeaderError("metadata", "metadata 'encoder_fingerprint' must be a short printable string")
    floats = {}
    for name in _FLOAT_FIELDS:
        try:
            floats[name] = finite_float(metadata[name])
        except ValueError:
            raise HeaderError(
                "metadata", f"metadata {name!r} is not a finite number (got {metadata[name][:40]!r})"
            ) from None
    for name in _TAU_FIELDS:
        if floats[name] <= 0:
            raise HeaderError("metadata", f"metadata {name!r} must be positive (got {floats[name]})")
    steps = _int_field(metadata, "steps", 0, MAX_STEPS)
    encoder_width = _int_field(metadata, "encoder_width", 1, MAX_TENSOR_ELEMENTS)
    settings = _json_field(metadata, "training_settings")
    if not isinstance(settings, dict) or not all(isinstance(v, str) for v in settings.values()):
        raise HeaderError("metadata", "metadata 'training_settings' must be a JSON object of strings")
    clip_layer = _int_field(metadata, "clip_layer", MIN_CLIP_LAYER, -1) if "clip_layer" in metadata else None
    training_images = (
        _int_field(metadata, "training_images", 1, MAX_TRAINING_IMAGES)
        if "training_images" in metadata
        else None
    )
    text_encoders = _text_encoders_field(metadata, encoder_width) if version != "1" else None
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

    names = _json_field(metadata, "layer_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise HeaderError("metadata", "metadata 'layer_names' must be a non-empty JSON list of layer names")
    if len(names) > MAX_LAYERS:
        raise HeaderError("metadata", f"metadata lists {len(names)} layers (limit {MAX_LAYERS})")
    if len(set(names)) != len(names):
        raise HeaderError("metadata", "metadata 'layer_names' lists a layer twice")
    widths = _json_field(metadata, "layer_widths")
    if (
        not isinstance(widths, list)
        or len(widths) != len(names)
        or not all(
            isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= MAX_TENSOR_ELEMENTS for w in widths
        )
    ):
        raise HeaderError(
            "metadata",
            f"metadata 'layer_widths' must be a JSON list of {len(names)} positive integers, one per layer",
        )
    layers = dict(zip(names, widths, strict=True))

    # Tensor names: exactly the fixed vectors plus one V target per listed layer.
    expected = {*FIXED_TENSORS, *(_tensor_name(n) for n in names)}
    present = set(header.entries)
    absent = [n for n in (*FIXED_TENSORS, *(_tensor_name(n) for n in names)) if n not in present]
    if absent:
        more = f" and {len(absent) - 1} more" if len(absent) > 1 else ""
        raise HeaderError("missing_tensor", f"tensor {absent[0][:200]!r}{more} is missing")
    extra = sorted(present - expected)
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
        got = header.entries[_tensor_name(layer)].length
        if got != width:
            raise HeaderError(
                "width", f"V target of layer {layer[:200]!r} has {got} elements; the layer is {width} wide"
            )

    info = ConceptInfo(
        word=word,
        superclass=superclass,
        model_family=family,
        encoder_fingerprint=fingerprint,
        train_beta=floats["train_beta"],
        train_tau=floats["train_tau"],
        suggested_beta_local=floats["suggested_beta_local"],
        suggested_beta_global=floats["suggested_beta_global"],
        suggested_tau=floats["suggested_tau"],
        steps=steps,
        training_settings=dict(settings),
        clip_layer=clip_layer,
        text_encoders=text_encoders,
        training_images=training_images,
    )
    return version, info, encoder_width, layers


def _checksum(header: ParsedHeader, data: bytes) -> str:
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
    elif _checksum(header, data) != recorded:
        raise ConceptFileError(
            path,
            "the file is damaged: its contents do not match the checksum written with it "
            "(a changed bit in the tensors or metadata); get a fresh copy or retrain",
            "checksum",
        )
    defect = gate_defect(concept.i_star, concept.u)
    if defect:
        raise ConceptFileError(path, defect, "inconsistent")


def _decode(data: bytes, file_size: int, path: str | os.PathLike[str]) -> Concept:
    header = _parse(data, file_size, path)
    try:
        _, info, _, layers = _validate_metadata(header)
    except HeaderError as e:
        raise ConceptFileError(path, e.defect, e.kind) from None
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
        info=info,
        token_embedding=tensors["token_embedding"],
        i_star=tensors["i_star"],
        u=tensors["u"],
        superclass_encoding=tensors["superclass_encoding"],
        v_targets={layer: tensors[_tensor_name(layer)] for layer in layers},
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
    return _decode(data, size, path)


def read_concept_metadata(
    path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES
) -> ConceptFileInfo:
    """Read and validate only the header (a few KB): word, model, layers, suggested settings.

    Cheap enough to call for every file in a folder when building a UI list; tensor values (NaN,
    the checksum, the gate) are only verified by load_concept.
    """
    data, size = _read_bounded(path, max_bytes, header_only=True)
    header = _parse(data, size, path)
    try:
        version, info, encoder_width, layers = _validate_metadata(header)
    except HeaderError as e:
        raise ConceptFileError(path, e.defect, e.kind) from None
    return ConceptFileInfo(
        path=Path(path),
        format_version=version,
        info=info,
        encoder_width=encoder_width,
        layers=layers,
        file_bytes=size,
    )
