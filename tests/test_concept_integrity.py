"""Damaged concept files are refused at load, naming the file: a checksum over tensors and metadata,
and the gate invariant i*ᵀu > 0 for files written before checksums existed."""

from __future__ import annotations

import json
import logging
import random
from dataclasses import replace
from pathlib import Path

import pytest
import safetensors.torch
import torch
from hostile_files import make_sd15_concept

from perfusion_core.concept import Concept
from perfusion_core.concept_file import ConceptFileError, load_concept
from perfusion_core.concept_integrity import CHECKSUM_KEY
from perfusion_core.concept_writer import save_concept

NAME = "teddy.safetensors"


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> tuple[Concept, bytes]:
    """A valid SD1.5-sized concept as loaded back, and its file's bytes."""
    path = save_concept(make_sd15_concept(), tmp_path_factory.mktemp("valid") / NAME)
    return load_concept(path), path.read_bytes()


def header_of(blob: bytes) -> tuple[dict, int]:
    """(header JSON, offset of the data region)."""
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8 : 8 + n]), 8 + n


def flipped(blob: bytes, byte: int, bit: int) -> bytes:
    out = bytearray(blob)
    out[byte] ^= 1 << bit
    return bytes(out)


def same_concept(a: Concept, b: Concept) -> bool:
    tensors = ("token_embedding", "i_star", "u", "superclass_encoding")
    return (
        a.info == b.info
        and all(torch.equal(getattr(a, n), getattr(b, n)) for n in tensors)
        and list(a.v_targets) == list(b.v_targets)
        and all(torch.equal(a.v_targets[k], b.v_targets[k]) for k in a.v_targets)
    )


def refusal(path: Path) -> ConceptFileError:
    with pytest.raises(ConceptFileError) as err:
        load_concept(path)
    assert str(err.value).startswith(f"Perfusion concept file '{path.name}' is not usable: "), str(err.value)
    return err.value


def test_the_checksum_does_not_depend_on_the_header_layout(tmp_path: Path, original, caplog) -> None:
    """safetensors may order header keys and data as it likes: a reordered file still verifies."""
    concept, blob = original
    header, start = header_of(blob)
    assert header["__metadata__"][CHECKSUM_KEY].startswith("sha256:")
    names = sorted((k for k in header if k != "__metadata__"), reverse=True)
    data, out = bytearray(), {"__metadata__": dict(reversed(list(header["__metadata__"].items())))}
    for name in names:
        begin, end = header[name]["data_offsets"]
        out[name] = {**header[name], "data_offsets": [len(data), len(data) + end - begin]}
        data += blob[start + begin : start + end]
    text = json.dumps(out, separators=(",", ":")).encode()
    path = tmp_path / NAME
    path.write_bytes(len(text).to_bytes(8, "little") + text + bytes(data))
    assert path.read_bytes() != blob
    with caplog.at_level(logging.WARNING, logger="comfyui-perfusion"):
        assert same_concept(load_concept(path), concept)
    assert not caplog.records


def test_a_flipped_bit_in_any_tensor_is_refused_naming_the_file(tmp_path: Path, original) -> None:
    """Each tensor, first/middle/last element, the sign, top exponent and lowest mantissa bits."""
    _, blob = original
    header, start = header_of(blob)
    path = tmp_path / NAME
    kinds = set()
    tensors = [k for k in header if k != "__metadata__"]
    assert len(tensors) == 20
    for name in tensors:
        size = {"F32": 4, "F16": 2}[header[name]["dtype"]]
        top = size * 8 - 1
        begin, end = header[name]["data_offsets"]
        count = (end - begin) // size
        for element in (0, count // 2, count - 1):
            for bit in (top, top - 1, 0):  # sign, top exponent bit, lowest mantissa bit
                path.write_bytes(flipped(blob, start + begin + element * size + bit // 8, bit % 8))
                kinds.add(refusal(path).kind)
    print(f"\ndefect kinds seen: {sorted(kinds)}")
    assert kinds <= {"checksum", "nonfinite"}


def test_a_flipped_bit_in_any_metadata_value_is_refused_naming_the_file(tmp_path: Path, original) -> None:
    _, blob = original
    header, _ = header_of(blob)
    path = tmp_path / NAME
    metadata = header["__metadata__"]
    for key, value in metadata.items():
        raw = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
        at = blob.index(json.dumps(key).encode() + b":" + raw) + len(json.dumps(key)) + 2  # value's 1st char
        for offset in {0, (len(raw) - 2) // 2, len(raw) - 3}:
            for bit in range(8):
                path.write_bytes(flipped(blob, at + offset, bit))
                refusal(path)


def test_seeded_bit_flips_anywhere_never_load_as_another_concept(tmp_path: Path, original) -> None:
    """A few hundred single-bit flips, a third of them in the header: each file is refused with a
    clear error naming it, or loads as exactly the original concept."""
    concept, blob = original
    _, start = header_of(blob)
    rng = random.Random(20240611)
    positions = [rng.randrange(len(blob) * 8) for _ in range(300)]
    positions += [rng.randrange(start * 8) for _ in range(150)]
    path = tmp_path / NAME
    outcomes: dict[str, int] = {}
    for position in positions:
        path.write_bytes(flipped(blob, position // 8, position % 8))
        try:
            loaded = load_concept(path)
        except ConceptFileError as e:
            assert f"'{NAME}'" in str(e), str(e)
            outcomes[e.kind] = outcomes.get(e.kind, 0) + 1
        else:
            assert same_concept(loaded, concept), f"bit {position} loads as another concept"
            outcomes["same concept"] = outcomes.get("same concept", 0) + 1
    print(f"\n{len(positions)} bit flips: {dict(sorted(outcomes.items()))}")
    assert outcomes.get("checksum", 0) > len(positions) // 2


def without_checksum(blob: bytes, path: Path, change=None) -> Path:
    """Rewrites the file as an older pack wrote it (no checksum), optionally changing tensors."""
    metadata = {k: v for k, v in header_of(blob)[0]["__metadata__"].items() if k != CHECKSUM_KEY}
    tensors = safetensors.torch.load(blob)
    safetensors.torch.save_file(change(tensors) if change else tensors, str(path), metadata=metadata)
    return path


def test_a_file_without_checksum_loads_with_a_warning_naming_it(tmp_path: Path, original, caplog) -> None:
    concept, blob = original
    path = without_checksum(blob, tmp_path / NAME)
    with caplog.at_level(logging.WARNING, logger="comfyui-perfusion"):
        assert same_concept(load_concept(path), concept)
    (record,) = caplog.records
    assert NAME in record.getMessage() and "no checksum" in record.getMessage()


def test_a_file_without_checksum_whose_u_was_damaged_is_refused_at_load(tmp_path: Path, original) -> None:
    """Without a checksum the gate invariant still catches a damaged u (before: refused at sampling
    time, with no file name)."""
    _, blob = original
    path = without_checksum(blob, tmp_path / NAME, lambda t: {**t, "u": -t["u"]})
    error = refusal(path)
    assert error.kind == "inconsistent" and "i*ᵀu" in error.defect


def test_save_refuses_a_concept_whose_gate_is_invalid(tmp_path: Path) -> None:
    concept = make_sd15_concept()
    with pytest.raises(ConceptFileError) as err:
        save_concept(replace(concept, u=-concept.u), tmp_path / NAME)
    assert err.value.kind == "inconsistent" and err.value.writing
    assert list(tmp_path.iterdir()) == []


FIXTURES = Path(__file__).resolve().parent / "fixtures"
# Written by the pack before the checksum named the keys it covers (commit 6de3949): both hash every
# metadata key but 'checksum'.
EARLIER_FILES = ("format1_with_checksum.safetensors", "format2_before_checksum_covers.safetensors")


def resaved(blob: bytes, path: Path, metadata: dict) -> Path:
    """The file as a tool that rewrites safetensors writes it: same tensors, this metadata."""
    safetensors.torch.save_file(safetensors.torch.load(blob), str(path), metadata=metadata)
    return path


FOREIGN_KEYS = {"modelspec.title": "Teddy", "ss_output_name": "hugsy", "description": "re-saved by a tool"}


@pytest.mark.parametrize("name", [NAME, *EARLIER_FILES])
def test_a_file_re_saved_with_foreign_metadata_keys_still_verifies(
    tmp_path: Path, original, name, caplog
) -> None:
    """The checksum covers the pack's own metadata only: keys a tool adds are not the pack's, so a good
    file re-saved with them loads (today's files, and files written before the checksum named its keys);
    a changed pack key is still refused."""
    concept, blob = (
        original if name == NAME else (load_concept(FIXTURES / name), (FIXTURES / name).read_bytes())
    )
    metadata = {**header_of(blob)[0]["__metadata__"], **FOREIGN_KEYS}
    with caplog.at_level(logging.WARNING, logger="comfyui-perfusion"):
        assert same_concept(load_concept(resaved(blob, tmp_path / name, metadata)), concept)
    assert not caplog.records
    stale = resaved(blob, tmp_path / "stale.safetensors", {**metadata, "superclass": "bears"})
    assert refusal(stale).kind == "checksum"


def test_a_format_2_file_without_its_checksum_is_refused_naming_it(tmp_path: Path) -> None:
    """Every format-2 file is written with a checksum, so one without it was altered (format 1 files
    from before checksums still load, with a warning: see above)."""
    blob = (FIXTURES / "format2_before_checksum_covers.safetensors").read_bytes()
    metadata = {k: v for k, v in header_of(blob)[0]["__metadata__"].items() if k != CHECKSUM_KEY}
    error = refusal(resaved(blob, tmp_path / NAME, metadata))
    assert error.kind == "checksum" and "format-2" in error.defect and "checksum" in error.defect
