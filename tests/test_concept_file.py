"""Concept file: exact round trip, atomic writes, size, and model compatibility checks (docs/method.md §7)."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hostile_files import SD15_LAYER_WIDTHS, make_sd15_concept
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import perfusion_core.atomic_write as atomic_write
import perfusion_core.concept_file as concept_file
from perfusion_core.compatibility import ConceptMismatchError, ModelSignature, check_compatible
from perfusion_core.concept import FORMAT_VERSION, Concept, ConceptInfo
from perfusion_core.concept_file import ConceptFileError, load_concept, read_concept_metadata
from perfusion_core.concept_writer import save_concept
from perfusion_core.layers import CrossAttentionLayer

FIXED = ("token_embedding", "i_star", "u", "superclass_encoding")


def _assert_same(original: Concept, loaded: Concept, v_dtype: torch.dtype = torch.float16) -> None:
    assert loaded.info == original.info
    for name in FIXED:
        got, want = getattr(loaded, name), getattr(original, name)
        assert got.dtype == torch.float32
        assert torch.equal(got, want.float()), name  # float32 vectors are stored exactly
    assert list(loaded.v_targets) == list(original.v_targets)  # model order preserved
    for layer, want in original.v_targets.items():
        got = loaded.v_targets[layer]
        assert got.dtype == torch.float32
        # V targets are rounded once to v_dtype, and nothing else changes.
        assert torch.equal(got, want.to(v_dtype).float()), layer


def _listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


# --------------------------------------------------------------------------------------------- round trip

_word = st.text(
    alphabet=st.characters(categories=("L", "N"), include_characters="_-<>"), min_size=1, max_size=20
)
_finite = st.floats(min_value=-10, max_value=10, allow_nan=False, allow_infinity=False)
_positive = st.floats(min_value=1e-4, max_value=10, allow_nan=False, allow_infinity=False)


def _text_encoders(d: int) -> st.SearchStrategy:
    """None (a format-1 file), one encoder, or two splitting the width (SDXL-like)."""
    two = st.integers(1, d - 1).map(lambda w: (("l", w), ("g", d - w))) if d > 1 else st.nothing()
    return st.one_of(st.none(), st.just((("h", d),)), two)


@st.composite
def concepts(draw: st.DrawFn) -> Concept:
    d = draw(st.integers(1, 64))
    n_layers = draw(st.integers(1, 8))
    names = draw(
        st.lists(
            st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._", min_size=1, max_size=40),
            min_size=n_layers,
            max_size=n_layers,
            unique=True,
        )
    )
    widths = draw(st.lists(st.integers(1, 64), min_size=n_layers, max_size=n_layers))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([1e-3, 1.0, 100.0]))
    g = torch.Generator().manual_seed(seed)
    info = ConceptInfo(
        word=draw(_word),
        superclass=draw(_word),
        model_family=draw(st.sampled_from(["SD15", "SD2", "SDXL", "my model ✨"])),
        encoder_fingerprint=draw(st.text(alphabet="0123456789abcdef:sha", max_size=72)),
        train_beta=draw(_finite),
        train_tau=draw(_positive),
        suggested_beta_local=draw(_finite),
        suggested_beta_global=draw(_finite),
        suggested_tau=draw(_positive),
        steps=draw(st.integers(0, 10**6)),
        training_settings=draw(st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4)),
        clip_layer=draw(st.one_of(st.none(), st.integers(-24, -1))),
        text_encoders=draw(_text_encoders(d)),
    )

    def vec(n: int) -> torch.Tensor:
        return torch.randn(n, generator=g) * scale

    i_star = vec(d)
    return Concept(
        info=info,
        token_embedding=vec(d),
        i_star=i_star,
        u=i_star * (0.1 + torch.rand(d, generator=g)),  # C⁻¹ i* for a diagonal C: i*ᵀu > 0
        superclass_encoding=vec(d),
        v_targets={name: vec(w) for name, w in zip(names, widths, strict=True)},
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(concept=concepts(), v_dtype=st.sampled_from([torch.float16, torch.float32, torch.bfloat16]))
def test_round_trip_every_tensor_and_field(tmp_path: Path, concept: Concept, v_dtype: torch.dtype) -> None:
    path = save_concept(concept, tmp_path / "c.safetensors", overwrite=True, v_dtype=v_dtype)
    _assert_same(concept, load_concept(path), v_dtype)
    meta = read_concept_metadata(path)
    assert meta.info == concept.info
    assert meta.format_version == ("1" if concept.info.text_encoders is None else FORMAT_VERSION)
    assert meta.encoder_width == concept.encoder_width
    assert meta.layers == concept.layer_widths and list(meta.layers) == list(concept.v_targets)
    assert meta.file_bytes == path.stat().st_size


def test_float16_v_targets_stay_within_half_precision(tmp_path: Path) -> None:
    """fp16 storage (the default) costs at most half an fp16 ulp: ~4.9e-4 relative."""
    concept = make_sd15_concept(seed=1)
    loaded = load_concept(save_concept(concept, tmp_path / "teddy.safetensors"))
    for layer, want in concept.v_targets.items():
        got = loaded.v_targets[layer]
        assert torch.allclose(got, want, rtol=2**-11, atol=2**-24 * 2), layer


def test_fp16_overflow_is_refused_at_save_not_at_load(tmp_path: Path) -> None:
    concept = make_sd15_concept()
    layer = next(iter(concept.v_targets))
    big = replace(concept, v_targets={**concept.v_targets, layer: torch.full((320,), 1e6)})
    with pytest.raises(ConceptFileError) as err:
        save_concept(big, tmp_path / "big.safetensors")
    assert err.value.kind == "nonfinite" and "big.safetensors" in str(err.value)
    assert _listing(tmp_path) == []
    save_concept(big, tmp_path / "big.safetensors", v_dtype=torch.float32)  # fine in float32
    assert load_concept(tmp_path / "big.safetensors").v_targets[layer][0] == 1e6


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        (lambda c: replace(c, u=torch.tensor([float("nan")] * c.encoder_width)), "nonfinite"),
        (lambda c: replace(c, info=replace(c.info, word="two words")), "metadata"),
        (lambda c: replace(c, info=replace(c.info, word="")), "metadata"),
        (lambda c: replace(c, info=replace(c.info, train_tau=0.0)), "metadata"),
        (lambda c: replace(c, info=replace(c.info, train_beta=float("inf"))), "metadata"),
        (lambda c: replace(c, info=replace(c.info, training_settings={"lr": 0.1})), "metadata"),
        (lambda c: replace(c, u=torch.zeros(c.encoder_width + 1)), "width"),
        (lambda c: replace(c, u=torch.zeros(2, 3)), "shape"),
        (lambda c: replace(c, v_targets={}), "metadata"),
    ],
)
def test_save_refuses_what_load_would_refuse(tmp_path: Path, change, kind: str) -> None:
    with pytest.raises(ConceptFileError) as err:
        save_concept(change(make_sd15_concept()), tmp_path / "bad.safetensors")
    assert err.value.kind == kind
    assert str(err.value).startswith("Perfusion concept cannot be written to 'bad.safetensors'")
    assert _listing(tmp_path) == []


# --------------------------------------------------------------------------------------------- atomicity


def test_refuses_to_clobber_without_overwrite(tmp_path: Path) -> None:
    path = save_concept(make_sd15_concept(seed=1), tmp_path / "teddy.safetensors")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="teddy.safetensors"):
        save_concept(make_sd15_concept(seed=2), path)
    assert path.read_bytes() == before
    assert _listing(tmp_path) == ["teddy.safetensors"]
    save_concept(make_sd15_concept(seed=2), path, overwrite=True)
    assert path.read_bytes() != before
    _assert_same(make_sd15_concept(seed=2), load_concept(path))
    assert _listing(tmp_path) == ["teddy.safetensors"]


def test_failed_rename_leaves_existing_file_intact_and_no_temp(tmp_path: Path, monkeypatch) -> None:
    path = save_concept(make_sd15_concept(seed=1), tmp_path / "teddy.safetensors")
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(concept_file.os, "replace", broken_replace)
    with pytest.raises(ConceptFileError, match="teddy.safetensors.*No space"):
        save_concept(make_sd15_concept(seed=2), path, overwrite=True)
    assert path.read_bytes() == before
    assert _listing(tmp_path) == ["teddy.safetensors"]


@pytest.mark.parametrize("where", ["fsync", "write", "link"])
def test_failure_mid_write_leaves_no_partial_file(tmp_path: Path, monkeypatch, where: str) -> None:
    def boom(*args, **kwargs):
        raise OSError(5, f"simulated {where} failure")

    if where == "fsync":
        monkeypatch.setattr(concept_file.os, "fsync", boom)
    elif where == "write":
        monkeypatch.setattr(concept_file.safetensors.torch, "save", boom)
    else:
        monkeypatch.setattr(concept_file.os, "link", boom)
        monkeypatch.setattr(concept_file.os, "replace", boom)
    with pytest.raises((OSError, ConceptFileError), match="simulated"):
        save_concept(make_sd15_concept(), tmp_path / "teddy.safetensors")
    assert _listing(tmp_path) == []


def test_keyboard_interrupt_mid_write_cleans_up(tmp_path: Path, monkeypatch) -> None:
    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(concept_file.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_concept(make_sd15_concept(), tmp_path / "teddy.safetensors")
    assert _listing(tmp_path) == []


def test_no_clobber_race_is_detected_at_commit(tmp_path: Path, monkeypatch) -> None:
    """A file that appears between the early check and the commit is still not clobbered."""
    path = tmp_path / "teddy.safetensors"
    real_mkstemp = atomic_write.tempfile.mkstemp

    def mkstemp_then_race(*args, **kwargs):
        path.write_bytes(b"someone else's file")
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(atomic_write.tempfile, "mkstemp", mkstemp_then_race)
    with pytest.raises(FileExistsError):
        save_concept(make_sd15_concept(), path)
    assert path.read_bytes() == b"someone else's file"
    assert _listing(tmp_path) == ["teddy.safetensors"]


def test_saved_file_is_readable_by_others(tmp_path: Path) -> None:
    path = save_concept(make_sd15_concept(), tmp_path / "teddy.safetensors")
    if os.name == "posix":
        assert path.stat().st_mode & 0o044 == 0o044


def test_a_save_removes_stale_temporaries_of_killed_writers_only(tmp_path: Path) -> None:
    stale = tmp_path / ".teddy.safetensors.abc123.tmp"
    fresh = tmp_path / ".teddy.safetensors.def456.tmp"  # a writer still at work
    other = tmp_path / ".mug.safetensors.abc123.tmp"  # another file's: not ours to judge
    for leftover in (stale, fresh, other):
        leftover.write_bytes(b"partial")
    old = time.time() - atomic_write.STALE_TEMPORARY_S - 60
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    save_concept(make_sd15_concept(), tmp_path / "teddy.safetensors")
    assert _listing(tmp_path) == sorted([fresh.name, other.name, "teddy.safetensors"])


# --------------------------------------------------------------------------------------------- size


def test_sd15_concept_is_about_40_kb(tmp_path: Path) -> None:
    assert len(SD15_LAYER_WIDTHS) == 16 and sum(SD15_LAYER_WIDTHS.values()) == 12_480
    path = save_concept(make_sd15_concept(), tmp_path / "teddy.safetensors")
    size = path.stat().st_size
    tensor_bytes = 4 * 768 * 4 + 12_480 * 2
    print(
        f"\nSD1.5 concept file: {size} bytes ({size / 1024:.1f} KiB; tensors {tensor_bytes}, header {size - tensor_bytes})"
    )
    # docs/method.md §7: ~40 KB (paper: 100 KB; public implementations: 200 KB-10 MB)
    assert size <= 42 * 1024
    assert size - tensor_bytes < 5 * 1024  # the header stays small


# --------------------------------------------------------------------------------------------- loading errors


def test_error_message_names_file_and_defect(tmp_path: Path) -> None:
    path = save_concept(make_sd15_concept(), tmp_path / "teddy.safetensors")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ConceptFileError) as err:
        load_concept(path)
    assert isinstance(err.value, ValueError)
    assert err.value.kind == "truncated"
    assert str(err.value).startswith("Perfusion concept file 'teddy.safetensors' is not usable: ")
    assert "truncated" in str(err.value)


def test_missing_file_and_size_limit(tmp_path: Path) -> None:
    with pytest.raises(ConceptFileError) as err:
        load_concept(tmp_path / "nope.safetensors")
    assert err.value.kind == "not_found"
    path = save_concept(make_sd15_concept(), tmp_path / "teddy.safetensors")
    with pytest.raises(ConceptFileError) as err:
        load_concept(path, max_bytes=1000)
    assert err.value.kind == "too_large" and "limit 1000" in str(err.value)


def test_huge_declared_shape_message(tmp_path: Path) -> None:
    import json

    path = save_concept(make_sd15_concept(), tmp_path / "teddy.safetensors")
    blob = path.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    header["u"]["shape"] = [2**32]
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + blob[8 + n :])
    with pytest.raises(ConceptFileError) as err:
        load_concept(path)
    assert str(err.value) == (
        "Perfusion concept file 'teddy.safetensors' is not usable: "
        "header declares tensor 'u' with 4294967296 elements (limit 16384)"
    )
    assert err.value.kind == "shape"


def test_header_length_starting_with_0x80_is_not_mistaken_for_pickle(tmp_path: Path) -> None:
    """A valid header of e.g. 0x280 bytes begins with b'\\x80\\x02', like a protocol-2 pickle."""
    base = make_sd15_concept()
    for pad in range(0, 400):
        c = replace(base, info=replace(base.info, training_settings={"pad": "x" * pad}))
        c = replace(c, v_targets=dict(list(c.v_targets.items())[:2]))
        path = save_concept(c, tmp_path / "p.safetensors", overwrite=True)
        prefix = path.read_bytes()[:2]
        if prefix[0] == 0x80 and 2 <= prefix[1] <= 5:
            _assert_same(c, load_concept(path))
            return
    pytest.skip("could not hit a header length that looks like a pickle opcode")


def test_a_lora_is_not_a_concept(tmp_path: Path) -> None:
    import safetensors.torch

    path = tmp_path / "lora.safetensors"
    safetensors.torch.save_file({"lora_up.weight": torch.zeros(4)}, path, metadata={"ss_network_dim": "4"})
    with pytest.raises(ConceptFileError, match="not a Perfusion concept"):
        load_concept(path)


# --------------------------------------------------------------------------------------------- compatibility

SDXL_LAYERS = {f"diffusion_model.input_blocks.4.1.transformer_blocks.{i}.attn2": 640 for i in range(2)} | {
    f"diffusion_model.middle_block.1.transformer_blocks.{i}.attn2": 1280 for i in range(10)
}


def _sd15_signature(**changes) -> ModelSignature:
    concept = make_sd15_concept()
    sig = ModelSignature(
        model_family="SD15",
        encoder_width=768,
        encoder_fingerprint=concept.info.encoder_fingerprint,
        layers=dict(SD15_LAYER_WIDTHS),
    )
    return replace(sig, **changes)


def test_same_model_is_compatible_without_warnings() -> None:
    assert check_compatible(make_sd15_concept(), _sd15_signature(), source="teddy.safetensors") == []
    reordered = dict(reversed(list(SD15_LAYER_WIDTHS.items())))
    assert check_compatible(make_sd15_concept(), _sd15_signature(layers=reordered), source="t") == []


def test_other_model_is_refused_naming_both_models() -> None:
    sdxl = ModelSignature("SDXL", 2048, "sha256:abc", SDXL_LAYERS)
    with pytest.raises(ConceptMismatchError) as err:
        check_compatible(make_sd15_concept(), sdxl, source="teddy.safetensors")
    msg = str(err.value)
    print("\n" + msg)
    assert isinstance(err.value, ValueError)
    assert msg.startswith(
        "'teddy.safetensors' was trained for SD15 (16 cross-attention layers, widths 320/640/1280, "
        "text encoder 768-wide); the loaded model is SDXL (12 cross-attention layers, widths 640/1280, "
        "text encoder 2048-wide)"
    )
    assert err.value.source == "teddy.safetensors"


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"model_family": "SD2"}, "model family"),
        ({"encoder_width": 1024}, "text encoder 768 vs 1024"),
        (
            {"layers": {**SD15_LAYER_WIDTHS, next(iter(SD15_LAYER_WIDTHS)): 321}},
            "320 wide in the concept, 321",
        ),
        ({"layers": dict(list(SD15_LAYER_WIDTHS.items())[:-1])}, "not found in the loaded model"),
        ({"layers": {**SD15_LAYER_WIDTHS, "diffusion_model.extra.attn2": 320}}, "not in the concept"),
    ],
)
def test_each_mismatch_is_refused(changes: dict, needle: str) -> None:
    with pytest.raises(ConceptMismatchError, match="was trained for SD15") as err:
        check_compatible(make_sd15_concept(), _sd15_signature(**changes), source="teddy.safetensors")
    assert needle in str(err.value)


def test_fine_tune_fingerprint_only_warns() -> None:
    warnings = check_compatible(
        make_sd15_concept(),
        _sd15_signature(encoder_fingerprint="sha256:0000dreamshaper"),
        source="teddy.safetensors",
    )
    assert len(warnings) == 1
    print("\n" + warnings[0])
    assert "teddy.safetensors" in warnings[0] and "sha256:0000dream" in warnings[0]
    assert "sha256:3f1a9c3f1" in warnings[0]


def test_signature_from_discovered_layers() -> None:
    found = [CrossAttentionLayer(name, width, 768) for name, width in SD15_LAYER_WIDTHS.items()]
    sig = ModelSignature.from_layers("SD15", "fp", found)
    assert sig.encoder_width == 768 and sig.layers == SD15_LAYER_WIDTHS
    with pytest.raises(ValueError, match="disagree"):
        ModelSignature.from_layers("SD15", "fp", [*found, CrossAttentionLayer("x", 320, 1024)])


def test_loaded_concept_checks_against_its_model(tmp_path: Path) -> None:
    concept = load_concept(save_concept(make_sd15_concept(), tmp_path / "teddy.safetensors"))
    assert check_compatible(concept, _sd15_signature(), source="teddy.safetensors") == []
