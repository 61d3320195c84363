"""Generator of malformed concept files, derived from one valid file.

Why: concept files are downloaded and shared, so `load_concept` must turn every malformed file into
a clear ConceptFileError, never a crash, a hang, a huge allocation or code execution. This module
writes a few hundred hostile variants of a valid file; tests feed them to the loader (and the nodes'
tests can feed them through the UI path). It only *writes* pickles and zips (harmless payloads);
nothing here ever unpickles.

Usage: ``generate_hostile_files(dest_dir, valid_concept_path) -> list[HostileCase]``.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import struct
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from perfusion_core.concept_integrity import CHECKSUM_KEY, COVERED_KEY, content_checksum

__all__ = ["HostileCase", "generate_hostile_files", "make_sd15_concept", "SD15_LAYER_WIDTHS"]

# Absent in older files: no defect (the checksum's key list: a sealed file without it is an older one).
_OPTIONAL_METADATA = (CHECKSUM_KEY, COVERED_KEY, "clip_layer", "training_images")


@dataclass(frozen=True)
class HostileCase:
    """One malformed file. `kind` is the generator's category; `expect` the loader defect kinds
    that count as a correct diagnosis (None: any ConceptFileError is correct, e.g. random bytes)."""

    name: str
    path: Path
    kind: str
    expect: frozenset[str] | None = None


# ---------------------------------------------------------------------------- a realistic valid concept

_SD15_BLOCKS = [
    ("input_blocks.1.1", 320),
    ("input_blocks.2.1", 320),
    ("input_blocks.4.1", 640),
    ("input_blocks.5.1", 640),
    ("input_blocks.7.1", 1280),
    ("input_blocks.8.1", 1280),
    ("middle_block.1", 1280),
    ("output_blocks.3.1", 1280),
    ("output_blocks.4.1", 1280),
    ("output_blocks.5.1", 1280),
    ("output_blocks.6.1", 640),
    ("output_blocks.7.1", 640),
    ("output_blocks.8.1", 640),
    ("output_blocks.9.1", 320),
    ("output_blocks.10.1", 320),
    ("output_blocks.11.1", 320),
]
SD15_LAYER_WIDTHS: dict[str, int] = {
    f"diffusion_model.{block}.transformer_blocks.0.attn2": width for block, width in _SD15_BLOCKS
}


def make_sd15_concept(seed: int = 0, word: str = "teddy", superclass: str = "bear"):
    """A Concept with SD1.5's real layer names and widths (16 layers, 12,480 V floats, D = 768)."""
    import torch

    from perfusion_core.concept import Concept, ConceptInfo

    g = torch.Generator().manual_seed(seed)
    d = 768
    info = ConceptInfo(
        word=word,
        superclass=superclass,
        model_family="SD15",
        encoder_fingerprint="sha256:" + "3f1a9c" * 10 + "beef",
        steps=400,
        training_settings={"lr_embedding": "0.006", "lr_v": "0.03", "batch": "4x4", "resolution": "512"},
        clip_layer=-1,
    )
    token_embedding = torch.randn(d, generator=g) * 0.02
    i_star = torch.randn(d, generator=g)
    return Concept(
        info=info,
        token_embedding=token_embedding,
        i_star=i_star,
        u=i_star * (0.5 + torch.rand(d, generator=g)) * 1e-2,  # C⁻¹ i* for a diagonal C: i*ᵀu > 0
        superclass_encoding=torch.randn(d, generator=g),
        v_targets={name: torch.randn(w, generator=g) for name, w in SD15_LAYER_WIDTHS.items()},
    )


# ---------------------------------------------------------------------------- raw safetensors helpers

_ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1}
_ITEMSIZE.update({"BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1, "C64": 8})

Tensors = dict[str, tuple[str, list, bytes]]  # name -> (dtype, shape, payload)


def _split(blob: bytes) -> tuple[dict, bytes]:
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def _unpack(blob: bytes) -> tuple[Tensors, dict[str, str]]:
    header, data = _split(blob)
    metadata = header.pop("__metadata__", {})
    tensors = {
        name: (spec["dtype"], list(spec["shape"]), data[spec["data_offsets"][0] : spec["data_offsets"][1]])
        for name, spec in header.items()
    }
    return tensors, metadata


def _raw(header_bytes: bytes, data: bytes, header_len: int | None = None) -> bytes:
    n = len(header_bytes) if header_len is None else header_len
    return (n % 2**64).to_bytes(8, "little") + header_bytes + data


def _header_bytes(header: dict) -> bytes:
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return text + b" " * (-len(text) % 8)


def _pack(
    tensors: Tensors, metadata: dict | None, *, metadata_raw: object = None, seal: bool = True
) -> bytes:
    """Assemble a file with consistent offsets (for semantic defects: names, widths, metadata).

    With `seal`, a checksum in `metadata` is recomputed for the new content, so the file is refused
    for its own defect and not just because it differs from what was first written.
    """
    header: dict = {}
    if metadata is not None:
        if seal and CHECKSUM_KEY in metadata:
            items = ((name, dtype, shape, payload) for name, (dtype, shape, payload) in tensors.items())
            metadata = {**metadata, CHECKSUM_KEY: content_checksum(items, metadata)}
        header["__metadata__"] = metadata
    if metadata_raw is not None:
        header["__metadata__"] = metadata_raw
    data = bytearray()
    for name, (dtype, shape, payload) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    return _raw(_header_bytes(header), bytes(data))


def _with_header(blob: bytes, mutate: Callable[[dict], None]) -> bytes:
    """Edit the header dict in place, keep the data bytes as they are (for lying headers)."""
    header, data = _split(blob)
    mutate(header)
    return _raw(_header_bytes(header), data)


def _poke_float(tensors: Tensors, name: str, index: int, value: float) -> Tensors:
    dtype, shape, payload = tensors[name]
    fmt, size = {"F32": ("<f", 4), "F16": ("<e", 2)}[dtype]
    buf = bytearray(payload)
    index %= len(buf) // size
    struct.pack_into(fmt, buf, index * size, value)
    out = dict(tensors)
    out[name] = (dtype, shape, bytes(buf))
    return out


# ---------------------------------------------------------------------------- the generator


def generate_hostile_files(
    dest_dir: str | os.PathLike[str], valid_concept_path: str | os.PathLike[str]
) -> list[HostileCase]:
    """Write at least 200 malformed variants of `valid_concept_path` into `dest_dir`.

    Every file stays inside `dest_dir` (checked), whatever its name. Deterministic (seeded).
    """
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    dest_real = dest.resolve()
    valid = Path(valid_concept_path).read_bytes()
    tensors, metadata = _unpack(valid)
    header, data = _split(valid)
    n_header = int.from_bytes(valid[:8], "little")
    layers = json.loads(metadata["layer_names"])
    widths = json.loads(metadata["layer_widths"])
    assert len(layers) >= 3, "the valid concept needs at least 3 layers"
    v_names = ["v_target." + n for n in layers]
    picks = [v_names[0], v_names[len(v_names) // 2], v_names[-1]]
    cases: list[HostileCase] = []
    rng = random.Random(20230501)

    def place(name: str) -> Path:
        path = dest / name
        if path.resolve().parent != dest_real:
            raise ValueError(f"hostile file name {name!r} would escape {dest}")
        return path

    def add(
        label: str, content: bytes, kind: str, expect: set[str] | None, *, filename: str | None = None
    ) -> None:
        filename = filename or f"{len(cases):03d}-{kind}-{label}.safetensors"
        path = place(filename)
        path.write_bytes(content)
        cases.append(HostileCase(filename, path, kind, None if expect is None else frozenset(expect)))

    def meta(**changes: object) -> bytes:
        m = dict(metadata)
        for k, v in changes.items():
            if v is None:
                m.pop(k, None)
            else:
                m[k] = v
        return _pack(tensors, m)

    # Empty and truncated ---------------------------------------------------------------------------
    add("zero-length", b"", "empty", {"empty"})
    cuts = set(range(1, 18)) | {8 + n_header // 2, 8 + n_header - 1, 8 + n_header, 8 + n_header + 1}
    cuts |= {len(valid) - k for k in (1, 2, 3, 4, 8, 100)}
    cuts |= {8 + n_header + (len(data) * i) // 48 for i in range(1, 48)}
    for cut in sorted(c for c in cuts if 0 < c < len(valid)):
        expect = {"truncated", "pickle"} if cut <= 8 else {"truncated"}
        add(f"cut-at-{cut}", valid[:cut], "truncated", expect)

    # Random bytes ----------------------------------------------------------------------------------
    for i, size in enumerate([1, 2, 7, 8, 9, 15, 16, 64, 100, 513, 1000, 4096, 40_000, len(valid)] * 2):
        add(f"random-{i}-{size}", rng.randbytes(size), "random", None)
    for i in range(6):
        body = b"{" + rng.randbytes(200 + 50 * i)
        add(f"random-json-{i}", _raw(body, rng.randbytes(64)), "random", {"header_json"})

    # Header length field ---------------------------------------------------------------------------
    body = valid[8:]
    for label, n, expect in [
        ("zero", 0, {"header_length"}),
        ("one", 1, {"header_length"}),
        ("beyond-file-by-1", len(body) + 1, {"truncated"}),
        ("beyond-file-by-4096", len(body) + 4096, {"truncated"}),
        ("over-cap", 2**20 + 1, {"header_length", "truncated"}),
        ("u32-max", 2**32 - 1, {"header_length"}),
        ("i63-max", 2**63 - 1, {"header_length"}),
        ("negative-1", 2**64 - 1, {"header_length"}),
        ("negative-8", 2**64 - 8, {"header_length"}),
        ("2^63", 2**63, {"header_length"}),
        ("too-small-by-1", n_header - 1, {"header_json", "offsets"}),
        ("too-small-by-9", n_header - 9, {"header_json", "offsets"}),
        ("half", n_header // 2, {"header_json"}),
        ("too-big-by-1", n_header + 1, {"header_json", "offsets", "truncated"}),
        ("too-big-by-64", n_header + 64, {"header_json", "offsets", "truncated"}),
    ]:
        add(f"header-len-{label}", n.to_bytes(8, "little") + body, "header_length", expect)

    # Invalid JSON header ---------------------------------------------------------------------------
    bad_headers = {
        "not-json": b"this is not json at all",
        "array": b"[1, 2, 3]",
        "null": b"null",
        "number": b"12345678",
        "string": b'"hello"',
        "open-brace": b"{ ",
        "double-close": b"{}}",
        "duplicate-key": b'{"u":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
        b'"u":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
        "bad-utf8": b'{"\xff\xfe":1}',
        "nan-constant": b'{"u": NaN}',
        "infinity-constant": b'{"u": Infinity}',
        "utf8-bom": b"\xef\xbb\xbf" + _header_bytes(header),
        "leading-space": b" " + _header_bytes(header),
        "deep-nesting": b'{"a":' + b"[" * 200_000 + b"]" * 200_000 + b"}",
        "nul-bytes": b"{\x00\x00\x00}",
        "trailing-garbage": _header_bytes(header).rstrip() + b"garbage",
        "huge-int-digits": b'{"u":{"dtype":"F32","shape":[' + b"9" * 6000 + b'],"data_offsets":[0,4]}}',
    }
    for label, hb in bad_headers.items():
        expect = {"header_json", "shape"} if label == "huge-int-digits" else {"header_json"}
        add(f"json-{label}", _raw(hb, data), "header_json", expect)
    add("json-empty-object", _raw(b"{}      ", data), "header_json", {"offsets", "metadata"})
    add("json-empty-object-no-data", _raw(b"{}      ", b""), "header_json", {"metadata"})

    # Shapes that must never be allocated -----------------------------------------------------------
    shapes: list[object] = [
        [2**32],
        [2**64],
        [10**30],
        [2**31 - 1],
        [16385],
        [-1],
        [0],
        [],
        [768, 768],
        [1, 768],
        [65536, 65536, 65536],
        "768",
        [768.0],
        [True],
        [None],
        {"n": 768},
        [[768]],
        None,
    ]
    for i, shape in enumerate(shapes):

        def set_shape(h: dict, shape: object = shape) -> None:
            h["u"]["shape"] = shape

        add(f"shape-{i}", _with_header(valid, set_shape), "shape", {"shape"})

    def huge_consistent(h: dict) -> None:  # offsets agree with the absurd shape: still refused on shape
        h["i_star"]["shape"] = [2**40]
        h["i_star"]["data_offsets"] = [0, 4 * 2**40]

    add("shape-huge-consistent-offsets", _with_header(valid, huge_consistent), "shape", {"shape"})
    v0 = picks[0]

    def huge_v(h: dict) -> None:
        h[v0]["shape"] = [2**33]

    add("shape-huge-v-target", _with_header(valid, huge_v), "shape", {"shape"})

    # Offsets ---------------------------------------------------------------------------------------
    b, e = header["u"]["data_offsets"]
    tb, te = header["token_embedding"]["data_offsets"]
    offset_cases: list[tuple[str, object, set[str]]] = [
        ("empty-span", [b, b], {"offsets"}),
        ("negative", [-1, e - b - 1], {"offsets"}),
        ("reversed", [e, b], {"offsets"}),
        ("one-byte-short", [b, e - 1], {"offsets"}),
        ("one-byte-long", [b, e + 1], {"offsets", "truncated"}),
        ("overlap", [tb, te], {"offsets"}),
        ("beyond-data", [len(data), len(data) + (e - b)], {"truncated"}),
        ("far-beyond", [2**64, 2**64 + (e - b)], {"truncated"}),
        ("three-values", [b, e, e], {"offsets"}),
        ("strings", [str(b), str(e)], {"offsets"}),
        ("floats", [float(b), float(e)], {"offsets"}),
        ("null", None, {"offsets"}),
        ("bools", [False, True], {"offsets"}),
        ("shifted-by-2", [b + 2, e + 2], {"offsets", "truncated"}),
    ]
    for label, offsets, expect in offset_cases:

        def set_offsets(h: dict, offsets: object = offsets) -> None:
            h["u"]["data_offsets"] = offsets

        add(f"offsets-{label}", _with_header(valid, set_offsets), "offsets", expect)
    add("offsets-trailing-byte", valid + b"\x00", "offsets", {"offsets"})
    add("offsets-trailing-page", valid + b"\x00" * 4096, "offsets", {"offsets"})

    def gap(h: dict) -> None:
        for spec in h.values():
            if isinstance(spec, dict) and "data_offsets" in spec:
                spec["data_offsets"] = [spec["data_offsets"][0] + 4, spec["data_offsets"][1] + 4]

    add(
        "offsets-leading-gap",
        _raw(_header_bytes(_mutated(header, gap)), b"\x00" * 4 + data),
        "offsets",
        {"offsets"},
    )

    def no_offsets(h: dict) -> None:
        del h["u"]["data_offsets"]

    add("entry-missing-offsets", _with_header(valid, no_offsets), "header_json", {"header_json"})

    def extra_field(h: dict) -> None:
        h["u"]["note"] = "hello"

    add("entry-extra-field", _with_header(valid, extra_field), "header_json", {"header_json"})

    def entry_not_object(h: dict) -> None:
        h["u"] = [1, 2, 3]

    add("entry-not-object", _with_header(valid, entry_not_object), "header_json", {"header_json"})

    # NaN / Inf values ------------------------------------------------------------------------------
    specials = [("nan", math.nan), ("inf", math.inf), ("ninf", -math.inf)]
    for name in ["token_embedding", "i_star", "u", "superclass_encoding", *picks]:
        for label, value in specials:
            index = rng.randrange(1 << 30)
            add(
                f"{label}-in-{name[:40]}",
                _pack(_poke_float(tensors, name, index, value), metadata),
                "nonfinite",
                {"nonfinite"},
            )
    add(
        "nan-everywhere-u",
        _pack({**tensors, "u": ("F32", tensors["u"][1], b"\x00\x00\xc0\x7f" * tensors["u"][1][0])}, metadata),
        "nonfinite",
        {"nonfinite"},
    )

    # Wrong dtypes ----------------------------------------------------------------------------------
    d = tensors["u"][1][0]
    for dtype in [
        "I64",
        "F64",
        "U8",
        "BOOL",
        "I8",
        "I16",
        "I32",
        "U16",
        "U32",
        "U64",
        "F8_E4M3",
        "F8_E5M2",
        "C64",
    ]:
        changed = {**tensors, "u": (dtype, [d], b"\x01" * (d * _ITEMSIZE[dtype]))}
        add(f"dtype-{dtype}", _pack(changed, metadata), "dtype", {"dtype"})
    for label, dtype in [
        ("lowercase", "f32"),
        ("empty", ""),
        ("number", 5),
        ("null", None),
        ("made-up", "F128"),
    ]:

        def set_dtype(h: dict, dtype: object = dtype) -> None:
            h["u"]["dtype"] = dtype

        add(f"dtype-{label}", _with_header(valid, set_dtype), "dtype", {"dtype"})
    vs = tensors[picks[1]][1]
    add(
        "dtype-I64-v-target",
        _pack({**tensors, picks[1]: ("I64", vs, b"\x00" * (vs[0] * 8))}, metadata),
        "dtype",
        {"dtype"},
    )

    # Missing and extra tensors ---------------------------------------------------------------------
    for name in ["token_embedding", "i_star", "u", "superclass_encoding", *picks]:
        add(
            f"missing-{name[:48]}",
            _pack({k: v for k, v in tensors.items() if k != name}, metadata),
            "missing_tensor",
            {"missing_tensor"},
        )
    add(
        "missing-all-v-targets",
        _pack({k: v for k, v in tensors.items() if k not in v_names}, metadata),
        "missing_tensor",
        {"missing_tensor"},
    )
    add("missing-everything", _pack({}, metadata), "missing_tensor", {"missing_tensor"})
    for label, name in [
        ("plain", "extra"),
        ("v-target", "v_target.diffusion_model.bogus.attn2"),
        ("empty-name", ""),
        ("path-name", "../../../etc/passwd"),
        ("k-target", "k_target." + layers[0]),
        ("metadata-lookalike", "__metadata2__"),
    ]:
        add(
            f"extra-{label}",
            _pack({**tensors, name: ("F32", [4], b"\x00" * 16)}, metadata),
            "extra_tensor",
            {"extra_tensor"},
        )
    many = {**tensors, **{f"t{i}": ("F32", [1], b"\x00" * 4) for i in range(5000)}}
    add("extra-5000-tensors", _pack(many, metadata), "extra_tensor", {"extra_tensor"})

    # Widths ----------------------------------------------------------------------------------------
    def resized(name: str, length: int) -> Tensors:
        dtype, _, payload = tensors[name]
        size = _ITEMSIZE[dtype]
        return {**tensors, name: (dtype, [length], (payload * 2)[: length * size])}

    add("width-u-short", _pack(resized("u", d - 1), metadata), "width", {"width"})
    add("width-i-star-long", _pack(resized("i_star", d + 1), metadata), "width", {"width"})
    add("width-encoder-width-meta", meta(encoder_width=str(d * 2)), "width", {"width"})
    all_wide = dict(tensors)
    for name in ["token_embedding", "i_star", "u", "superclass_encoding"]:
        all_wide[name] = ("F32", [d + 8], b"\x00" * (4 * (d + 8)))
    add("width-all-fixed-vectors", _pack(all_wide, metadata), "width", {"width"})
    add("width-v-short", _pack(resized(picks[0], widths[0] - 1), metadata), "width", {"width"})
    add("width-v-long", _pack(resized(picks[-1], widths[-1] + 1), metadata), "width", {"width"})
    add("width-meta-widths-off", meta(layer_widths=json.dumps([w + 1 for w in widths])), "width", {"width"})
    if widths[::-1] != widths:
        add("width-layers-reversed", meta(layer_names=json.dumps(layers[::-1])), "width", {"width"})

    # Layer names -----------------------------------------------------------------------------------
    renamed = dict(tensors)
    renamed["v_target.diffusion_model.renamed.attn2"] = renamed.pop(picks[1])
    add("names-tensor-renamed", _pack(renamed, metadata), "layer_names", {"missing_tensor"})
    listed = list(layers)
    listed[0] = "diffusion_model.not_a_layer.attn2"
    add("names-meta-renamed", meta(layer_names=json.dumps(listed)), "layer_names", {"missing_tensor"})
    add(
        "names-meta-dropped-one",
        meta(layer_names=json.dumps(layers[:-1]), layer_widths=json.dumps(widths[:-1])),
        "layer_names",
        {"extra_tensor"},
    )
    add(
        "names-duplicate",
        meta(layer_names=json.dumps([layers[0], *layers[:-1]])),
        "layer_names",
        {"metadata"},
    )
    add("names-empty-list", meta(layer_names="[]", layer_widths="[]"), "layer_names", {"metadata"})
    add("names-not-strings", meta(layer_names=json.dumps([1] * len(layers))), "layer_names", {"metadata"})
    add("names-empty-string", meta(layer_names=json.dumps(["", *layers[1:]])), "layer_names", {"metadata"})
    add("names-object", meta(layer_names=json.dumps({"a": 1})), "layer_names", {"metadata"})
    add("names-widths-count-differs", meta(layer_widths=json.dumps(widths[:-1])), "layer_names", {"metadata"})
    add("names-not-json", meta(layer_names="input_blocks.1, input_blocks.2"), "layer_names", {"metadata"})

    # Metadata --------------------------------------------------------------------------------------
    add("meta-absent", _pack(tensors, None), "metadata", {"metadata"})
    add("meta-is-list", _pack(tensors, None, metadata_raw=["a", "b"]), "metadata", {"metadata"})
    add(
        "meta-number-value",
        _pack(tensors, None, metadata_raw={**metadata, "steps": 400}),
        "metadata",
        {"metadata"},
    )
    add(
        "meta-nested-value",
        _pack(tensors, None, metadata_raw={**metadata, "word": {"w": "x"}}),
        "metadata",
        {"metadata"},
    )
    add("meta-format-missing", meta(format=None), "metadata", {"metadata"})
    add("meta-format-lora", meta(format="lora"), "metadata", {"metadata"})
    for label, version in [
        ("3", "3"),
        ("0", "0"),
        ("empty", ""),
        ("1.0", "1.0"),
        ("99999", "99999"),
        ("v1", "v1"),
    ]:
        add(f"version-{label}", meta(format_version=version), "version", {"version"})
    add("version-missing", meta(format_version=None), "version", {"version"})
    for key in sorted(metadata):
        if key in ("format", "format_version", *_OPTIONAL_METADATA):
            continue
        add(f"meta-missing-{key}", meta(**{key: None}), "metadata", {"metadata"})
    bad_values: list[tuple[str, str]] = [
        ("word", ""),
        ("word", "two words"),
        ("word", "tab\tword"),
        ("word", "x" * 101),
        ("word", "nul\x00"),
        ("superclass", ""),
        ("superclass", "teddy bear"),
        ("model_family", ""),
        ("model_family", "line\nbreak"),
        ("encoder_fingerprint", "\x1b[31mred"),
        ("train_beta", "nan"),
        ("train_beta", "inf"),
        ("train_beta", "abc"),
        ("train_beta", ""),
        ("train_beta", "1e999"),
        ("suggested_beta_local", "-inf"),
        ("suggested_beta_global", "0.5.1"),
        ("train_tau", "0"),
        ("suggested_tau", "-0.15"),
        ("steps", "1.5"),
        ("steps", "-1"),
        ("steps", "1e3"),
        ("steps", ""),
        ("steps", "9" * 30),
        ("steps", " 400"),
        ("encoder_width", "0"),
        ("encoder_width", "abc"),
        ("encoder_width", "99999999"),
        ("training_settings", "[]"),
        ("training_settings", '{"lr": 0.006}'),
        ("training_settings", "not json"),
        ("training_settings", '{"a": NaN}'),
        ("layer_widths", json.dumps([w + 0.5 for w in widths])),
        ("layer_widths", json.dumps([True] * len(widths))),
        ("layer_widths", "{}"),
        ("layer_widths", json.dumps([0] * len(widths))),
        ("layer_widths", json.dumps([2**40] * len(widths))),
        ("training_images", "0"),
        ("training_images", "-4"),
        ("training_images", "four"),
        ("training_images", "1e3"),
        ("training_images", ""),
        ("clip_layer", "0"),
        ("clip_layer", "2"),
        ("clip_layer", "-99999"),
        ("clip_layer", "last"),
        ("clip_layer", ""),
    ]
    for i, (key, value) in enumerate(bad_values):
        add(f"meta-bad-{key}-{i}", meta(**{key: value}), "metadata", {"metadata"})
    # Format 2 names the text encoders the word embedding spans; they must add up to its width.
    add("v2-no-text-encoders", meta(format_version="2", text_encoders=None), "metadata", {"metadata"})
    for i, value in enumerate(
        [
            '[["l",700]]',
            '[["l",768],["g",1280]]',
            "[]",
            '[["l","768"]]',
            '[["l",384],["l",384]]',
            '{"l":768}',
            '[["l",true]]',
            '[["l",768,1]]',
            '[["a b",768]]',
            '[["l",-768],["g",1536]]',
            "not json",
        ]
    ):
        add(
            f"v2-bad-text-encoders-{i}",
            meta(format_version="2", text_encoders=value),
            "metadata",
            {"metadata", "width"},
        )

    # Damage the format checks cannot see: only the checksum tells ----------------------------------
    def flipped(position: int, bit: int) -> bytes:
        out = bytearray(valid)
        out[position] ^= 1 << bit
        return bytes(out)

    data_start = 8 + n_header
    for name, bit in [
        ("u", 0),
        ("u", 31),
        ("i_star", 22),
        ("token_embedding", 7),
        (picks[1], 15),
        (picks[2], 3),
    ]:
        itemsize = _ITEMSIZE[header[name]["dtype"]]
        begin, end = header[name]["data_offsets"]
        element = begin + rng.randrange((end - begin) // itemsize) * itemsize
        add(
            f"bitflip-{name[:40]}-bit{bit}",
            flipped(data_start + element + bit // 8, bit % 8),
            "checksum",
            {"checksum"},
        )
    for key in ("word", "train_beta", "steps"):  # bit 0 keeps a digit a digit, a letter printable
        pair = f"{json.dumps(key)}:{json.dumps(metadata[key])}".encode()
        first_char = valid.index(pair, 8, data_start) + len(json.dumps(key)) + 2
        add(f"bitflip-meta-{key}", flipped(first_char, 0), "checksum", {"checksum"})
    stale = {**metadata, "superclass": "bears"}
    add("checksum-stale-metadata", _pack(tensors, stale, seal=False), "checksum", {"checksum"})
    nudged = _poke_float(tensors, "superclass_encoding", 5, 0.25)
    add("checksum-stale-tensor", _pack(nudged, metadata, seal=False), "checksum", {"checksum"})
    for label, value in [
        ("zeros", "sha256:" + "0" * 64),
        ("md5", "md5:0123456789abcdef0123456789abcdef"),
        ("uppercase", metadata[CHECKSUM_KEY].upper()),
        ("empty", ""),
        ("truncated", metadata[CHECKSUM_KEY][:-1]),
    ]:
        content = _pack(tensors, {**metadata, CHECKSUM_KEY: value}, seal=False)
        add(f"checksum-{label}", content, "checksum", {"checksum"})
    covered = json.loads(metadata[COVERED_KEY])
    for label, value in [
        ("not-json", "word,superclass"),
        ("not-a-list", '{"word":1}'),
        ("numbers", "[1,2]"),
        ("drops-word", json.dumps([k for k in covered if k != "word"])),
        ("names-an-absent-key", json.dumps([*covered, "absent"])),
    ]:
        content = _pack(tensors, {**metadata, COVERED_KEY: value}, seal=False)
        add(f"checksum-covers-{label}", content, "checksum", {"checksum"})
    unlisted = {k: v for k, v in metadata.items() if k != COVERED_KEY}
    add("checksum-covers-removed", _pack(tensors, unlisted, seal=False), "checksum", {"checksum"})
    v2 = {**metadata, "format_version": "2", "text_encoders": json.dumps([["l", d]])}
    add(
        "checksum-v2-without",
        _pack(tensors, {k: v for k, v in v2.items() if k != CHECKSUM_KEY}),
        "checksum",
        {"checksum"},
    )

    # Values that no trained concept has (sealed: the checksum is right, the content is not) ---------
    def vector(*values: float) -> tuple[str, list, bytes]:
        return ("F32", [d], struct.pack(f"<{d}f", *values, *[0.0] * (d - len(values))))

    u_values = struct.unpack(f"<{d}f", tensors["u"][2])
    for label, changes in [
        ("negated-u", {"u": vector(*(-x for x in u_values))}),
        ("zero-u", {"u": vector()}),
        ("zero-i-star", {"i_star": vector()}),
        ("overflowing-gate", {"u": vector(1.0), "i_star": vector(1e-45)}),  # u / i*ᵀu > float32 max
    ]:
        add(f"gate-{label}", _pack({**tensors, **changes}, metadata), "inconsistent", {"inconsistent"})

    # Pickles and zips renamed to .safetensors (written, never loaded) ------------------------------
    payload = {"token_embedding": [0.0] * 8, "note": "harmless"}
    for protocol in (2, 3, 4, 5):
        add(f"pickle-protocol-{protocol}", pickle.dumps(payload, protocol=protocol), "pickle", {"pickle"})
    add("pickle-tiny", pickle.dumps({}, protocol=4), "pickle", {"pickle"})
    add("pickle-big-list", pickle.dumps(list(range(20_000)), protocol=4), "pickle", {"pickle"})
    add("pickle-protocol-0", pickle.dumps(payload, protocol=0), "pickle", {"header_length", "truncated"})
    zip_path = place(f"{len(cases):03d}-pickle-zip.safetensors")
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(payload, protocol=2))
        zf.writestr("archive/version", "3\n")
    cases.append(HostileCase(zip_path.name, zip_path, "pickle", frozenset({"pickle"})))
    add("zip-empty-archive", b"PK\x05\x06" + b"\x00" * 18, "pickle", {"pickle"})

    # Too large (sparse: no disk or memory cost) ----------------------------------------------------
    big = place(f"{len(cases):03d}-too_large-sparse-64MiB.safetensors")
    with open(big, "wb") as f:
        f.write(valid[:8])
        f.truncate(64 * 2**20)
    cases.append(HostileCase(big.name, big, "too_large", frozenset({"too_large"})))

    # Not a regular file ----------------------------------------------------------------------------
    folder = place("directory.safetensors")
    folder.mkdir(exist_ok=True)
    cases.append(HostileCase(folder.name, folder, "not_a_file", frozenset({"not_a_file"})))
    if hasattr(os, "mkfifo"):
        fifo = place("fifo.safetensors")
        if not fifo.exists():
            os.mkfifo(fifo)
        cases.append(HostileCase(fifo.name, fifo, "not_a_file", frozenset({"not_a_file"})))
    if hasattr(os, "symlink"):
        try:
            link = place("link-to-directory.safetensors")
            if not link.is_symlink():
                os.symlink(folder.name, link)
            cases.append(HostileCase(link.name, link, "not_a_file", frozenset({"not_a_file"})))
            dangling = place("dangling-link.safetensors")
            if not dangling.is_symlink():
                os.symlink("does-not-exist.safetensors", dangling)
            cases.append(HostileCase(dangling.name, dangling, "not_found", frozenset({"not_found"})))
        except OSError:  # symlinks may need privileges (Windows)
            pass

    # Awkward file names (content is hostile too; the names must not confuse messages or paths) -----
    odd_names = [
        "..%2f..%2fescape.safetensors",
        "..%5c..%5cescape.safetensors",
        "name with spaces.safetensors",
        "тедди 🧸.safetensors",
        "-rf.safetensors",
        ".hidden.safetensors",
        "quote'and\"double.safetensors",
        "percent%s%n%x.safetensors",
        "{braces}.safetensors",
        "x" * 200 + ".safetensors",
    ]
    contents = [
        (valid[: len(valid) // 2], {"truncated"}),
        (pickle.dumps(payload, protocol=4), {"pickle"}),
        (b"", {"empty"}),
        (meta(format_version="7"), {"version"}),
    ]
    for i, filename in enumerate(odd_names):
        content, expect = contents[i % len(contents)]
        try:
            add("odd-name", content, "odd_name", expect, filename=filename)
        except OSError:  # a name this filesystem cannot hold (e.g. quotes on Windows)
            continue

    return cases


def _mutated(header: dict, mutate: Callable[[dict], None]) -> dict:
    copy = json.loads(json.dumps(header))
    mutate(copy)
    return copy


if __name__ == "__main__":  # python -m tests.hostile_files DEST VALID.safetensors
    made = generate_hostile_files(sys.argv[1], sys.argv[2])
    print(f"wrote {len(made)} hostile files to {sys.argv[1]}")
