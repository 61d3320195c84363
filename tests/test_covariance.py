"""C = E[e eᵀ], its inverse, its cache, the prompt corpus and the encoder fingerprint
(docs/method.md §2, §6)."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from perfusion_core import covariance as cov
from perfusion_core.covariance import (
    CovarianceCache,
    SecondMomentAccumulator,
    cache_key,
    compute_inverse_covariance,
    compute_second_moment,
    invert_covariance,
    text_encoder_fingerprint,
)
from perfusion_core.prompt_corpus import CORPUS_VERSION, prompt_corpus

REPO = Path(__file__).resolve().parents[1]

# --- accumulator -----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    lead=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    t=st.integers(1, 6),
    d=st.integers(1, 7),
    n_batches=st.integers(1, 3),
    weighted=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_accumulator_matches_dense(lead, t, d, n_batches, weighted, seed):
    g = torch.Generator().manual_seed(seed)
    acc = SecondMomentAccumulator()
    rows, row_w = [], []
    for _ in range(n_batches):
        enc = torch.randn(*lead, t, d, generator=g, dtype=torch.float32)
        w = torch.rand(*lead, t, generator=g) + 0.1 if weighted else None
        acc.add(enc, w)
        rows.append(enc.double().reshape(-1, d))
        row_w.append(
            w.double().reshape(-1) if w is not None else torch.ones(rows[-1].shape[0], dtype=torch.float64)
        )
    x, w = torch.cat(rows), torch.cat(row_w)
    naive = sum(w[i] * torch.outer(x[i], x[i]) for i in range(x.shape[0])) / w.sum()
    c = acc.matrix()
    assert c.dtype == torch.float64 and c.shape == (d, d)
    torch.testing.assert_close(c, naive, rtol=1e-10, atol=1e-12)
    assert acc.count == pytest.approx(float(w.sum()))
    assert torch.equal(c, c.T)


def test_accumulator_mask_selects_positions():
    enc = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.float32)
    acc = SecondMomentAccumulator()
    acc.add(enc, mask)
    chosen = torch.stack([enc[0, 0], enc[0, 1], enc[1, 0]]).double()
    torch.testing.assert_close(acc.matrix(), chosen.T @ chosen / 3)
    assert acc.count == 3


def test_accumulator_computes_on_the_device_it_is_given():
    """Encoders hand their outputs back on the CPU; the products go to the compute device ('meta'
    stands in for a GPU), except on devices that may lack float64 (MPS, XPU, DirectML)."""
    on_device = SecondMomentAccumulator(torch.device("meta"))
    on_device.add(torch.randn(2, 5, 4))
    assert on_device.device.type == "meta"
    for without_float64 in ("mps", "xpu", "privateuseone"):
        acc = SecondMomentAccumulator(torch.device(without_float64))
        acc.add(torch.randn(2, 5, 4))
        assert acc.device.type == "cpu" and acc.matrix().dtype == torch.float64, without_float64


def test_accumulator_rejects_bad_input():
    acc = SecondMomentAccumulator()
    with pytest.raises(ValueError):
        acc.matrix()
    acc.add(torch.randn(3, 4))
    with pytest.raises(ValueError):
        acc.add(torch.randn(3, 5))
    with pytest.raises(ValueError):
        acc.add(torch.randn(2, 3, 4), torch.ones(3))
    with pytest.raises(ValueError):
        acc.add(torch.randn(3, 4), -torch.ones(3))


# --- inversion -------------------------------------------------------------------------------------


def _spd(d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4 * d, d, generator=g, dtype=torch.float64)
    return x.T @ x / x.shape[0]


def test_inverse_of_well_conditioned_matrix():
    c = _spd(16)
    inv = invert_covariance(c)
    assert inv.dtype == torch.float64
    torch.testing.assert_close(c @ inv, torch.eye(16, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(c @ invert_covariance(c, ridge=0.0), torch.eye(16, dtype=torch.float64))
    assert torch.equal(inv, inv.T)


def test_inverse_of_rank_deficient_matrix_is_finite():
    # Like padding tokens: many identical encodings give a rank-1-dominated C.
    v = torch.randn(12, dtype=torch.float64)
    c = torch.outer(v, v) + 1e-3 * torch.outer(torch.ones(12, dtype=torch.float64), torch.ones(12))
    inv = invert_covariance(c)
    assert torch.isfinite(inv).all()
    assert torch.equal(inv, inv.T)
    # Even ridge=0 on an exactly singular C falls back instead of producing inf/nan.
    assert torch.isfinite(invert_covariance(torch.outer(v, v), ridge=0.0)).all()


def test_scaling_c_scales_inverse_and_keeps_u_direction():
    c = _spd(10, seed=3)
    i_star = torch.randn(10, dtype=torch.float64)
    for k in (1e-4, 7.0, 1e5):
        inv, inv_k = invert_covariance(c), invert_covariance(k * c)
        torch.testing.assert_close(inv_k * k, inv, rtol=1e-9, atol=0)
        u, u_k = inv @ i_star, inv_k @ i_star
        torch.testing.assert_close(u_k / u_k.norm(), u / u.norm(), rtol=1e-9, atol=1e-12)


def test_invert_rejects_bad_input():
    with pytest.raises(ValueError):
        invert_covariance(torch.ones(3, 4))
    with pytest.raises(ValueError):
        invert_covariance(torch.zeros(3, 3))
    with pytest.raises(ValueError):
        invert_covariance(torch.full((2, 2), float("nan")))


# --- compute from an encode function --------------------------------------------------------------

T_TOY, D_TOY = 5, 6


def _toy_encode(prompts: list[str]) -> torch.Tensor:
    """Deterministic per-prompt encodings, independent of batching."""
    out = []
    for p in prompts:
        seed = int.from_bytes(hashlib.sha256(p.encode()).digest()[:4], "little")
        out.append(torch.randn(T_TOY, D_TOY, generator=torch.Generator().manual_seed(seed)))
    return torch.stack(out)


def test_compute_inverse_covariance_matches_direct_and_reports_progress():
    prompts = [f"prompt {i}" for i in range(70)]
    calls: list[tuple[int, int]] = []
    inv = compute_inverse_covariance(
        _toy_encode, prompts, batch_size=32, progress=lambda a, b: calls.append((a, b))
    )
    x = _toy_encode(prompts).double().reshape(-1, D_TOY)
    torch.testing.assert_close(inv, invert_covariance(x.T @ x / x.shape[0]))
    assert calls == [(32, 70), (64, 70), (70, 70)]
    # Batching does not change the result.
    torch.testing.assert_close(
        compute_second_moment(_toy_encode, prompts, batch_size=7), x.T @ x / x.shape[0]
    )


def test_should_stop_raising_cancels():
    class Cancelled(Exception):
        pass

    encoded: list[int] = []
    checks = {"n": 0}

    def encode(batch):
        encoded.append(len(batch))
        return _toy_encode(batch)

    def should_stop():
        checks["n"] += 1
        if checks["n"] == 3:
            raise Cancelled

    with pytest.raises(Cancelled):
        compute_inverse_covariance(
            encode, [str(i) for i in range(100)], batch_size=10, should_stop=should_stop
        )
    assert encoded == [10, 10]


def test_compute_rejects_bad_encode_output():
    with pytest.raises(ValueError):
        compute_inverse_covariance(lambda b: torch.zeros(len(b), 4), ["a", "b"])
    with pytest.raises(ValueError):
        compute_inverse_covariance(_toy_encode, [])


# --- cache -----------------------------------------------------------------------------------------


def test_cache_round_trip(tmp_path):
    cache = CovarianceCache(tmp_path / "cov")
    key = cache_key("abc123", CORPUS_VERSION, 4000)
    assert cache.get(key) is None
    inv = invert_covariance(_spd(8))
    path = cache.put(key, inv, {"encoder": "clip-l", "n_prompts": "4000"})
    got = cache.get(key)
    assert got is not None and got.dtype == torch.float64
    assert torch.equal(got, inv)
    assert cache.get(key, expected_dim=8) is not None
    assert path.parent == tmp_path / "cov"
    assert cache.get(cache_key("other", CORPUS_VERSION, 4000)) is None


def test_cache_file_name_is_sanitised(tmp_path):
    cache = CovarianceCache(tmp_path)
    key = "../../etc/passwd|enc=a/b\\c:*?"
    path = cache.put(key, torch.eye(3, dtype=torch.float64))
    assert path.parent == tmp_path
    assert all(ch in "0123456789abcdef_cov.safetensors" for ch in path.name)
    assert cache.get(key) is not None


def test_corrupt_cache_file_is_ignored_with_warning(tmp_path, caplog):
    cache = CovarianceCache(tmp_path)
    key = cache_key("fp", "v", 10)
    cache.path_for(key).write_bytes(b"\x00garbage, not safetensors")
    with caplog.at_level(logging.WARNING, logger=cov.__name__):
        assert cache.get(key) is None
    assert "Ignoring" in caplog.text
    # Recomputing overwrites the bad file.
    cache.put(key, torch.eye(4, dtype=torch.float64))
    assert cache.get(key) is not None


def test_cache_rejects_wrong_shape_dtype_or_key(tmp_path, caplog):
    from safetensors.torch import save_file

    cache = CovarianceCache(tmp_path)
    key = cache_key("fp", "v", 10)
    cache.put(key, torch.eye(4, dtype=torch.float64))
    with caplog.at_level(logging.WARNING, logger=cov.__name__):
        assert cache.get(key, expected_dim=5) is None
        save_file(
            {"c_inv": torch.eye(4, dtype=torch.float32)}, str(cache.path_for(key)), metadata={"key": key}
        )
        assert cache.get(key) is None
        save_file(
            {"c_inv": torch.ones(4, 3, dtype=torch.float64)}, str(cache.path_for(key)), metadata={"key": key}
        )
        assert cache.get(key) is None
        save_file(
            {"c_inv": torch.eye(4, dtype=torch.float64)}, str(cache.path_for(key)), metadata={"key": "x"}
        )
        assert cache.get(key) is None
    assert caplog.text.count("Ignoring") == 4


def test_cache_write_is_atomic(tmp_path, monkeypatch):
    cache = CovarianceCache(tmp_path)
    key = "k"
    good = torch.eye(3, dtype=torch.float64)
    cache.put(key, good)
    replaced: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy_replace(src, dst):
        replaced.append((str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(cov.os, "replace", spy_replace)
    cache.put(key, 2 * good)
    assert len(replaced) == 1 and replaced[0][1] == str(cache.path_for(key))
    assert Path(replaced[0][0]).parent == tmp_path  # same directory: os.replace is atomic there

    # A failure while writing leaves the previous file intact and no temporary file behind.
    def broken_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", broken_save)
    with pytest.raises(OSError):
        cache.put(key, 3 * good)
    assert torch.equal(cache.get(key), 2 * good)
    assert sorted(p.name for p in tmp_path.iterdir()) == [cache.path_for(key).name]


def test_cache_key_depends_on_everything():
    base = cache_key("fp", "1-abc", 4000)
    assert base == cache_key("fp", "1-abc", 4000)
    others = {
        cache_key("fp2", "1-abc", 4000),
        cache_key("fp", "2-abc", 4000),
        cache_key("fp", "1-abc", 4001),
        cache_key("fp", "1-abc", 4000, seed=1),
        cache_key("fp", "1-abc", 4000, ridge=1e-4),
    }
    assert base not in others and len(others) == 5


# --- corpus ----------------------------------------------------------------------------------------


def test_corpus_deterministic_and_varied():
    a = prompt_corpus(4000, seed=0)
    assert a == prompt_corpus(4000, seed=0)
    assert a != prompt_corpus(4000, seed=1)
    assert len(a) == 4000 and len(set(a)) >= 2000
    assert all(isinstance(p, str) and p.strip() == p and p for p in a)
    words = [len(p.split()) for p in a]
    assert min(words) <= 2 and max(words) >= 50
    buckets = {min(w // 10, 5) for w in words}
    assert buckets == {0, 1, 2, 3, 4, 5}
    assert sum(w <= 3 for w in words) >= 100 and sum(w >= 45 for w in words) >= 100
    assert sum("," in p for p in a) >= 1000  # multi-clause / tag prompts
    assert any(p.startswith("a photo of") for p in a)  # training-style templates
    assert prompt_corpus(0) == [] and len(prompt_corpus(5)) == 5
    assert isinstance(CORPUS_VERSION, str) and CORPUS_VERSION


def test_corpus_same_in_another_process():
    """No dependence on hash randomisation: a fresh interpreter with another hash seed agrees."""
    code = (
        "import hashlib;"
        "from perfusion_core.prompt_corpus import prompt_corpus, CORPUS_VERSION;"
        "print(CORPUS_VERSION, hashlib.sha256('\\n'.join(prompt_corpus(500, 7)).encode()).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env, check=True
    )
    local = hashlib.sha256("\n".join(prompt_corpus(500, 7)).encode()).hexdigest()
    assert out.stdout.split() == [CORPUS_VERSION, local]


# --- fingerprint -----------------------------------------------------------------------------------


def _toy_encoder_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {
        "embeddings.token_embedding.weight": torch.randn(1000, 64, generator=g) * 0.02,
        "embeddings.position_embedding.weight": torch.randn(77, 64, generator=g) * 0.01,
        "embeddings.position_ids": torch.arange(77)[None],
        "final_layer_norm.weight": torch.ones(64),
        "final_layer_norm.bias": torch.zeros(64),
    }
    for layer in range(3):
        sd[f"layers.{layer}.fc1.weight"] = torch.randn(256, 64, generator=g) * 0.02
        sd[f"layers.{layer}.fc1.bias"] = torch.randn(256, generator=g) * 0.01
        sd[f"layers.{layer}.fc2.weight"] = torch.randn(64, 256, generator=g) * 0.02
    return sd


def test_fingerprint_stable_across_dtypes_and_order():
    sd = _toy_encoder_weights()
    fp = text_encoder_fingerprint(sd.items())
    assert len(fp) == 16 and all(c in "0123456789abcdef" for c in fp)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
        assert text_encoder_fingerprint(cast.items()) == fp, dtype
    assert text_encoder_fingerprint(reversed(list(sd.items()))) == fp
    # Loaders disagree on whether to keep the position_ids buffer.
    assert text_encoder_fingerprint((k, v) for k, v in sd.items() if not k.endswith("position_ids")) == fp


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fingerprint_same_on_cuda():
    sd = _toy_encoder_weights()
    gpu = {k: v.cuda().half() for k, v in sd.items()}
    assert text_encoder_fingerprint(gpu.items()) == text_encoder_fingerprint(sd.items())


def test_fingerprint_differs_for_different_weights():
    sd = _toy_encoder_weights()
    fp = text_encoder_fingerprint(sd.items())
    assert text_encoder_fingerprint(_toy_encoder_weights(seed=1).items()) != fp
    # A fine-tune-sized perturbation of every weight.
    g = torch.Generator().manual_seed(5)
    tuned = {
        k: v + 0.005 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
        for k, v in sd.items()
    }
    assert text_encoder_fingerprint(tuned.items()) != fp
    renamed = {("prefix." + k): v for k, v in sd.items()}
    assert text_encoder_fingerprint(renamed.items()) != fp
    reshaped = dict(sd, **{"layers.0.fc1.bias": sd["layers.0.fc1.bias"][:255]})
    assert text_encoder_fingerprint(reshaped.items()) != fp


@pytest.mark.slow
def test_fingerprint_is_cheap_for_clip_l_sized_encoder():
    """The fingerprint reads a fixed sample of each tensor, never whole weights: counted as the
    elements every non-view op materialises (a full-tensor copy or cast would add ~123M)."""
    import time

    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    from perfusion_core.covariance import _FINGERPRINT_SAMPLES_PER_TENSOR

    class MaterialisedElements(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if not func.is_view:
                self.count += sum(t.numel() for t in tree_leaves(out) if isinstance(t, torch.Tensor))
            return out

    # CLIP ViT-L/14 text encoder layout: ~123M parameters in ~200 tensors.
    sd = {"token_embedding": torch.empty(49408, 768).normal_(0, 0.02)}
    for layer in range(12):
        for name in ("q", "k", "v", "o"):
            sd[f"{layer}.{name}.weight"] = torch.empty(768, 768).normal_(0, 0.02)
            sd[f"{layer}.{name}.bias"] = torch.zeros(768)
        sd[f"{layer}.fc1.weight"] = torch.empty(3072, 768).normal_(0, 0.02)
        sd[f"{layer}.fc2.weight"] = torch.empty(768, 3072).normal_(0, 0.02)
        for ln in ("ln1", "ln2"):
            sd[f"{layer}.{ln}.weight"] = torch.ones(768)
            sd[f"{layer}.{ln}.bias"] = torch.zeros(768)
    parameters = sum(t.numel() for t in sd.values())
    with MaterialisedElements() as counter:
        start = time.perf_counter()
        text_encoder_fingerprint(sd.items())
        seconds = time.perf_counter() - start
    bound = 16 * _FINGERPRINT_SAMPLES_PER_TENSOR * len(sd)  # indices, gather, cast, concat, compare, ...
    print(
        f"fingerprint: {counter.count} elements materialised for {parameters} parameters, {seconds * 1e3:.1f} ms"
    )
    assert counter.count <= bound < parameters // 100
