"""A concept file's metadata (docs/method.md §7), written and checked from one table of fields.

Why one table: what the writer puts in and what the reader accepts must never drift apart, so every
field (its key, kind, bounds, and whether a file must have it) is listed once, in `FIELDS`. The
table's order is the order the fields are checked in, so a file with several defects is refused for
the first of them (safetensors stores the keys in an order of its own). The file's identity
('format', 'format_version') is checked before any field: it decides whether they can be read at all.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .concept import FORMAT_VERSION, Concept, ConceptInfo
from .safetensors_header import MAX_TENSOR_ELEMENTS, HeaderError, finite_float

__all__ = [
    "FIELDS",
    "FORMAT_MARKER",
    "SUPPORTED_FORMAT_VERSIONS",
    "ConceptMetadata",
    "Field",
    "build_metadata",
    "read_metadata",
]

FORMAT_MARKER = "perfusion-concept"  # metadata["format"]: tells a concept from a LoRA or checkpoint
SUPPORTED_FORMAT_VERSIONS = frozenset({"1", FORMAT_VERSION})  # 1: SD1.x/SD2.x files, one text encoder
MAX_LAYERS = 1024
MAX_TEXT_ENCODERS = 8
MAX_WORD_CHARS = 100
MAX_TEXT_CHARS = 256
MAX_STEPS = 10**9
MAX_TRAINING_IMAGES = 10**7
MIN_CLIP_LAYER = -1024  # CLIP Set Last Layer counts from -1 (last) down; no text encoder is deeper

_Earlier = Mapping[str, Any]  # the values of the fields read before this one, by key


class _Kind(Protocol):
    """How a field's value becomes metadata text and back (raising HeaderError on a bad value)."""

    def write(self, value: Any) -> str: ...

    def read(self, key: str, text: str, earlier: _Earlier) -> object: ...


@dataclass(frozen=True)
class _Word:
    """One printable word without spaces: what a prompt can hold as a single word."""

    def write(self, value: str) -> str:
        return value

    def read(self, key: str, text: str, earlier: _Earlier) -> str:
        if not text:
            raise HeaderError("metadata", f"metadata {key!r} is empty")
        if len(text) > MAX_WORD_CHARS or not text.isprintable() or any(c.isspace() for c in text):
            raise HeaderError("metadata", f"metadata {key!r} must be a single word (got {text[:40]!r})")
        return text


@dataclass(frozen=True)
class _Text:
    """A short printable string (shown in messages, so no control characters)."""

    non_empty: bool

    def write(self, value: str) -> str:
        return value

    def read(self, key: str, text: str, earlier: _Earlier) -> str:
        if (self.non_empty and not text) or len(text) > MAX_TEXT_CHARS or not text.isprintable():
            what = "non-empty printable" if self.non_empty else "printable"
            raise HeaderError("metadata", f"metadata {key!r} must be a short {what} string")
        return text


@dataclass(frozen=True)
class _Float:
    """A finite number, written as the shortest text that reads back exactly."""

    positive: bool = False

    def write(self, value: float) -> str:
        return repr(float(value))

    def read(self, key: str, text: str, earlier: _Earlier) -> float:
        try:
            value = finite_float(text)
        except ValueError:
            raise HeaderError(
                "metadata", f"metadata {key!r} is not a finite number (got {text[:40]!r})"
            ) from None
        if self.positive and value <= 0:
            raise HeaderError("metadata", f"metadata {key!r} must be positive (got {value})")
        return value


@dataclass(frozen=True)
class _Int:
    """An integer in [lo, hi], in plain decimal digits (no exponent, no spaces)."""

    lo: int
    hi: int

    def write(self, value: int) -> str:
        return str(int(value))

    def read(self, key: str, text: str, earlier: _Earlier) -> int:
        if not re.fullmatch(r"-?[0-9]{1,18}", text):
            raise HeaderError("metadata", f"metadata {key!r} is not an integer (got {text[:40]!r})")
        value = int(text)
        if not self.lo <= value <= self.hi:
            raise HeaderError("metadata", f"metadata {key!r} is {value}, outside [{self.lo}, {self.hi}]")
        return value


def _reject_json_constant(name: str) -> object:
    raise ValueError(f"non-standard JSON constant {name}")


@dataclass(frozen=True)
class _Json:
    """A compact JSON value whose shape `check` verifies (given the fields read before it) and returns.

    `ensure_ascii` False keeps free text (layer names, training settings) readable in the header."""

    check: Callable[[object, _Earlier], object]
    ensure_ascii: bool = True

    def write(self, value: object) -> str:
        return json.dumps(value, ensure_ascii=self.ensure_ascii, separators=(",", ":"))

    def read(self, key: str, text: str, earlier: _Earlier) -> object:
        try:
            value = json.loads(text, parse_constant=_reject_json_constant)
        except (ValueError, RecursionError):
            raise HeaderError("metadata", f"metadata {key!r} is not valid JSON") from None
        return self.check(value, earlier)


def _layer_names(names: object, earlier: _Earlier) -> list[str]:
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise HeaderError("metadata", "metadata 'layer_names' must be a non-empty JSON list of layer names")
    if len(names) > MAX_LAYERS:
        raise HeaderError("metadata", f"metadata lists {len(names)} layers (limit {MAX_LAYERS})")
    if len(set(names)) != len(names):
        raise HeaderError("metadata", "metadata 'layer_names' lists a layer twice")
    return names


def _layer_widths(widths: object, earlier: _Earlier) -> list[int]:
    count = len(earlier["layer_names"])
    if (
        not isinstance(widths, list)
        or len(widths) != count
        or not all(
            isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= MAX_TENSOR_ELEMENTS for w in widths
        )
    ):
        raise HeaderError(
            "metadata",
            f"metadata 'layer_widths' must be a JSON list of {count} positive integers, one per layer",
        )
    return widths


def _training_settings(settings: object, earlier: _Earlier) -> dict[str, str]:
    if not isinstance(settings, dict) or not all(isinstance(v, str) for v in settings.values()):
        raise HeaderError("metadata", "metadata 'training_settings' must be a JSON object of strings")
    return dict(settings)


def _text_encoders(value: object, earlier: _Earlier) -> tuple[tuple[str, int], ...]:
    """[[key, width], ...], widths adding up to the embedding's."""
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
    encoder_width = earlier["encoder_width"]
    if sum(width for _, width in encoders) != encoder_width:
        raise HeaderError(
            "width",
            f"metadata 'text_encoders' widths add up to {sum(w for _, w in encoders)}, but the word "
            f"embedding is {encoder_width} wide",
        )
    return encoders


@dataclass(frozen=True)
class Field:
    """One metadata entry: its key, its kind, which files must have it, and where a concept holds it."""

    key: str
    kind: _Kind
    optional: bool = False  # absent when unknown (files written before it was recorded): read as None
    since_format: int = 1  # format-1 files neither need it nor are read for it
    # The value in a concept; None: the ConceptInfo attribute named `key`.
    of_concept: Callable[[Concept], object] | None = None

    def value(self, concept: Concept) -> object:
        return getattr(concept.info, self.key) if self.of_concept is None else self.of_concept(concept)

    def needed(self, version: str) -> bool:
        """Whether every file of format `version` has this field."""
        return not self.optional and self.applies(version)

    def applies(self, version: str) -> bool:
        """Whether files of format `version` carry this field at all."""
        return int(version) >= self.since_format


def _pairs_as_lists(pairs: tuple[tuple[str, int], ...] | None) -> list[list[object]] | None:
    """[[key, width], ...]; an entry that is not a sequence is a TypeError (cannot be encoded)."""
    return None if pairs is None else [list(pair) for pair in pairs]


FIELDS: tuple[Field, ...] = (
    Field("word", _Word()),
    Field("superclass", _Word()),
    Field("model_family", _Text(non_empty=True)),
    Field("encoder_fingerprint", _Text(non_empty=False)),
    Field("train_beta", _Float()),
    Field("train_tau", _Float(positive=True)),
    Field("suggested_beta_local", _Float()),
    Field("suggested_beta_global", _Float()),
    Field("suggested_tau", _Float(positive=True)),
    Field("steps", _Int(0, MAX_STEPS)),
    Field("encoder_width", _Int(1, MAX_TENSOR_ELEMENTS), of_concept=lambda c: c.encoder_width),
    Field("training_settings", _Json(_training_settings, ensure_ascii=False)),
    Field("clip_layer", _Int(MIN_CLIP_LAYER, -1), optional=True),
    Field("training_images", _Int(1, MAX_TRAINING_IMAGES), optional=True),
    Field(
        "text_encoders",
        _Json(_text_encoders),
        since_format=2,
        of_concept=lambda c: _pairs_as_lists(c.info.text_encoders),
    ),
    # The V targets' layout (it names and sizes the file's tensors), checked last: the reader then
    # checks the tensors against it.
    Field("layer_names", _Json(_layer_names, ensure_ascii=False), of_concept=lambda c: list(c.v_targets)),
    Field("layer_widths", _Json(_layer_widths), of_concept=lambda c: list(c.layer_widths.values())),
)
_INFO_KEYS = frozenset(f.name for f in dataclasses.fields(ConceptInfo))


def build_metadata(concept: Concept) -> dict[str, str]:
    """The metadata of `concept`'s file; TypeError or ValueError if a value cannot be written.
    Expects 1-D tensors (the writer checks them first)."""
    # A concept read from a format-1 file does not know its encoder's name: it stays format 1.
    version = "1" if concept.info.text_encoders is None else FORMAT_VERSION
    metadata = {"format": FORMAT_MARKER, "format_version": version}
    for field in FIELDS:
        value = field.value(concept)
        if value is None and (field.optional or field.since_format > 1):
            continue
        metadata[field.key] = field.kind.write(value)
    return metadata


@dataclass(frozen=True)
class ConceptMetadata:
    """What a file's metadata says: its format version, the concept's info, and its tensors' layout."""

    format_version: str
    info: ConceptInfo
    encoder_width: int
    layers: dict[str, int]  # layer name -> width, in model order


def _format_version(metadata: Mapping[str, str]) -> str:
    """The file's format version, once its marker says it is a concept file this pack can read."""
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
    return version


def read_metadata(metadata: Mapping[str, str] | None) -> ConceptMetadata:
    """Check every field of the table; raises HeaderError for the first defect, in the table's order."""
    if metadata is None:
        raise HeaderError("metadata", "the header has no __metadata__; this is not a Perfusion concept file")
    version = _format_version(metadata)
    missing = [f.key for f in FIELDS if f.needed(version) and f.key not in metadata]
    if missing:
        raise HeaderError("metadata", f"metadata lacks {', '.join(repr(k) for k in missing)}")
    values: dict[str, Any] = {}
    for field in FIELDS:
        present = field.applies(version) and field.key in metadata
        values[field.key] = field.kind.read(field.key, metadata[field.key], values) if present else None
    return ConceptMetadata(
        format_version=version,
        info=ConceptInfo(**{key: value for key, value in values.items() if key in _INFO_KEYS}),
        encoder_width=values["encoder_width"],
        layers=dict(zip(values["layer_names"], values["layer_widths"], strict=True)),
    )
