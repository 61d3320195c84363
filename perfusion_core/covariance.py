"""The second moment C = E[e eᵀ] of text encodings, its inverse, and a cache for it (docs/method.md §2, §6).

C⁻¹ turns a concept's target input i* into u = C⁻¹ i*, which makes the rank-1 edit leave other
encodings as unchanged as possible *in the distribution of real prompts*. So C must be estimated from
the encodings the denoiser actually attends to, at every token position (start, end and padding
included), and it only depends on the text encoder: compute it once per encoder and cache it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

# Bump when what goes into C changes (e.g. which token positions count), so old caches are not reused.
COVARIANCE_FORMAT_VERSION = "1"
_TENSOR_NAME = "c_inv"


def _float64_device(device: torch.device) -> torch.device:
    """`device` where it computes in float64 (CUDA, the CPU; meta: shapes only), else the CPU."""
    return device if device.type in ("cuda", "cpu", "meta") else torch.device("cpu")


class SecondMomentAccumulator:
    """Running uncentered second moment C = Σ w e eᵀ / Σ w, in float64.

    Uncentered (no mean subtraction) because the edit's "energy" eᵀ C⁻¹ i* is a raw inner product,
    as in ROME/Perfusion. float64 because 4000 prompts × 77 positions of sums lose precision in
    float32, and C is later inverted where it is near-singular.
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        """`device`: where the products and the running sum live (default: each batch's own device).
        The compute device is the fast place: encoders hand their outputs back on the CPU, where an
        SDXL-wide float64 product over thousands of prompts takes minutes. Devices other than CUDA
        (MPS, Intel XPU, DirectML) may lack float64, so the CPU does their share."""
        self._device = None if device is None else _float64_device(torch.device(device))
        self._sum: torch.Tensor | None = None
        self._count = 0.0

    @property
    def device(self) -> torch.device | None:
        """Where the running sum lives (None before the first batch)."""
        return None if self._sum is None else self._sum.device

    @property
    def dim(self) -> int | None:
        return None if self._sum is None else int(self._sum.shape[0])

    @property
    def count(self) -> float:
        """Total weight added so far (the number of token positions when no weights are given)."""
        return self._count

    def add(self, encodings: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        """Add encodings (..., T, D). `weights` (..., T) selects/weights positions; default: all count.

        All positions count by default because the denoiser's cross-attention reads all 77 of them,
        padding included, so the edit must leave them all alone.
        """
        if encodings.ndim < 2:
            raise ValueError(f"encodings must be (..., T, D), got shape {tuple(encodings.shape)}")
        d = int(encodings.shape[-1])
        if self._sum is not None and d != self._sum.shape[0]:
            raise ValueError(f"encoding width {d} does not match earlier batches ({self._sum.shape[0]})")
        device = self._device or _float64_device(encodings.device)
        x = encodings.detach().to(device=device, dtype=torch.float64).reshape(-1, d)
        if weights is None:
            total = float(x.shape[0])
            s = x.T @ x
        else:
            if tuple(weights.shape) != tuple(encodings.shape[:-1]):
                raise ValueError(
                    f"weights shape {tuple(weights.shape)} must equal encodings.shape[:-1] "
                    f"{tuple(encodings.shape[:-1])}"
                )
            w = weights.detach().to(device=device, dtype=torch.float64).reshape(-1)
            if bool((w < 0).any()):
                raise ValueError("weights must be non-negative")
            total = float(w.sum())
            s = (x * w[:, None]).T @ x
        self._sum = s if self._sum is None else self._sum + s.to(self._sum.device)
        self._count += total

    def matrix(self) -> torch.Tensor:
        """C (D, D), float64, exactly symmetric."""
        if self._sum is None or self._count <= 0:
            raise ValueError("no encodings (or only zero weights) have been added")
        c = self._sum.cpu() / self._count
        return (c + c.T) / 2


def invert_covariance(c: torch.Tensor, ridge: float = 1e-6) -> torch.Tensor:
    """(C + λI)⁻¹ in float64 with λ = ridge · trace(C)/D, symmetrised.

    C is near-singular in practice: padding positions are almost identical encodings and the
    encoder's final LayerNorm confines encodings to a lower-dimensional set, so a plain inverse would
    amplify noise in directions no prompt uses. A ridge *relative to the mean diagonal* fixes that
    while keeping the result scale-equivariant: (kC)⁻¹ = C⁻¹/k, so u = C⁻¹ i* changes only by a
    constant, which the gate's ratio r(e) = eᵀu / i*ᵀu cancels.
    """
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"C must be square (D, D), got shape {tuple(c.shape)}")
    if ridge < 0 or not math.isfinite(ridge):
        raise ValueError(f"ridge must be finite and >= 0, got {ridge}")
    a = c.detach().to(device="cpu", dtype=torch.float64)
    if not bool(torch.isfinite(a).all()):
        raise ValueError("C contains non-finite values")
    a = (a + a.T) / 2
    d = a.shape[0]
    mean_diag = float(torch.diagonal(a).sum()) / d
    if not mean_diag > 0:
        raise ValueError("C has a non-positive trace; it is not a second-moment matrix")
    a = a + (ridge * mean_diag) * torch.eye(d, dtype=torch.float64)
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info) == 0:
        inv = torch.cholesky_inverse(chol)
    else:
        # Not positive definite even after the ridge (ridge=0 on a singular C, or C not PSD):
        # fall back to an eigen-decomposition with eigenvalues floored at the ridge level.
        evals, evecs = torch.linalg.eigh(a)
        floor = max(ridge, 1e-12) * mean_diag
        inv = (evecs / evals.clamp_min(floor)) @ evecs.T
    return (inv + inv.T) / 2


def compute_second_moment(
    encode: Callable[[list[str]], torch.Tensor],
    prompts: list[str],
    *,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], None] | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """C (D, D) float64 on the CPU from `encode(batch) -> (N, T, D)` over all prompts, all token
    positions, the products computed on `device` (SecondMomentAccumulator).

    N may exceed the batch size: a long prompt is encoded as several T-token chunks, all of which
    the denoiser attends to.

    `should_stop` is called before each batch and may raise to cancel (e.g. ComfyUI's interrupt);
    `progress(done, total)` is called after each batch with the number of prompts encoded so far.
    """
    if not prompts:
        raise ValueError("prompts is empty")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    acc = SecondMomentAccumulator(device)
    total = len(prompts)
    for start in range(0, total, batch_size):
        if should_stop is not None:
            should_stop()
        batch = prompts[start : start + batch_size]
        with torch.no_grad():
            enc = encode(batch)
        if enc.ndim != 3 or enc.shape[0] < len(batch):
            raise ValueError(f"encode must return (N>={len(batch)}, T, D), got shape {tuple(enc.shape)}")
        acc.add(enc)
        if progress is not None:
            progress(start + len(batch), total)
    return acc.matrix()


def compute_inverse_covariance(
    encode: Callable[[list[str]], torch.Tensor],
    prompts: list[str],
    *,
    batch_size: int = 32,
    ridge: float = 1e-6,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], None] | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """C⁻¹ (D, D) float64: `compute_second_moment` followed by `invert_covariance`."""
    c = compute_second_moment(
        encode, prompts, batch_size=batch_size, progress=progress, should_stop=should_stop, device=device
    )
    return invert_covariance(c, ridge=ridge)


def cache_key(
    encoder_fingerprint: str,
    corpus_version: str,
    n_prompts: int,
    *,
    seed: int = 0,
    ridge: float = 1e-6,
) -> str:
    """Everything C⁻¹ depends on: the encoder's weights, the corpus (version, size, seed), the ridge."""
    return (
        f"perfusion-cov{COVARIANCE_FORMAT_VERSION}|enc={encoder_fingerprint}|corpus={corpus_version}"
        f"|n={int(n_prompts)}|seed={int(seed)}|ridge={float(ridge)!r}"
    )


class CovarianceCache:
    """C⁻¹ matrices on disk, one safetensors file per key (never pickle: cache dirs can be shared).

    File names are a hex digest of the key, so any key string is safe; the key itself is stored in the
    metadata and checked on load. Writes go to a temporary file in the same directory and are moved
    into place with os.replace, so a crash or a concurrent reader never sees a half-written file.
    A file that cannot be read or fails validation is reported with logging.warning and treated as
    a miss (the caller recomputes and overwrites it).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def path_for(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
        return self.directory / f"cov_{digest}.safetensors"

    def get(self, key: str, expected_dim: int | None = None) -> torch.Tensor | None:
        path = self.path_for(key)
        if not path.is_file():
            return None
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                if meta.get("key") != key:
                    raise ValueError(f"stored key {meta.get('key')!r} does not match")
                if _TENSOR_NAME not in f.keys():
                    raise ValueError(f"missing tensor {_TENSOR_NAME!r}")
                t = f.get_tensor(_TENSOR_NAME)
            if t.dtype != torch.float64 or t.ndim != 2 or t.shape[0] != t.shape[1]:
                raise ValueError(f"expected a square float64 matrix, got {t.dtype} {tuple(t.shape)}")
            if expected_dim is not None and t.shape[0] != expected_dim:
                raise ValueError(f"expected width {expected_dim}, got {t.shape[0]}")
            if not bool(torch.isfinite(t).all()):
                raise ValueError("non-finite values")
            return t
        except Exception as exc:  # corrupt/truncated/foreign file: recompute instead of crashing
            logger.warning("Ignoring unreadable covariance cache file %s: %s", path, exc)
            return None

    def put(self, key: str, c_inv: torch.Tensor, metadata: dict[str, str] | None = None) -> Path:
        if c_inv.ndim != 2 or c_inv.shape[0] != c_inv.shape[1]:
            raise ValueError(f"c_inv must be square (D, D), got shape {tuple(c_inv.shape)}")
        from safetensors.torch import save_file

        meta = {str(k): str(v) for k, v in (metadata or {}).items()}
        meta["key"] = key
        meta["format"] = COVARIANCE_FORMAT_VERSION
        tensor = c_inv.detach().to(device="cpu", dtype=torch.float64).contiguous()
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path_for(key)
        fd, tmp = tempfile.mkstemp(prefix=".tmp_cov_", suffix=".safetensors", dir=self.directory)
        os.close(fd)
        try:
            save_file({_TENSOR_NAME: tensor}, tmp, metadata=meta)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return path


# --- encoder fingerprint ---------------------------------------------------------------------------

_FINGERPRINT_SAMPLES_PER_TENSOR = 32
_SKIP_NAME = re.compile(r"(^|\.)position_ids$")


def _sample_indices(numel: int, k: int) -> torch.Tensor:
    """k spread-out flat indices, a pure function of (numel, k): one per stride, offset varies."""
    i = torch.arange(k, dtype=torch.int64)
    stride = numel // k
    return i * stride + (i * 7919) % max(stride, 1)


def text_encoder_fingerprint(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """16-hex-digit fingerprint of a text encoder's weights, equal whatever dtype/device they are in.

    Hashes sorted names, shapes, and the *signs* (v > 0) of 32 fixed, evenly spread values per
    floating-point tensor. Why signs: any rounding of values to a grid (significant digits, fp16,
    quantisation) has boundaries, and with thousands of samples some value of a fp32 checkpoint
    always lies close enough to one that its bf16 and fp16 copies round to different sides. The sign
    survives fp32→fp16/bf16 conversion exactly, except for positive values below fp16's smallest
    subnormal (3e-8), which are rare in trained weights (~1e-6 of them), so about one model in a few
    hundred loaded in fp16 from fp32 weights would miss the cache once. Different weights (another
    fine-tune, another encoder) differ in the signs of small values. Non-float buffers such as
    `position_ids` are skipped: some loaders keep them, others do not. Cost: one tiny gather per
    tensor (~200 for CLIP-L) and a single device→host copy.
    """
    items = sorted(
        ((name, t) for name, t in named_tensors if t.is_floating_point() and not _SKIP_NAME.search(name)),
        key=lambda item: item[0],
    )
    h = hashlib.sha256()
    samples: list[torch.Tensor] = []
    for name, t in items:
        h.update(f"{name}:{tuple(t.shape)};".encode())
        n = t.numel()
        if n == 0:
            continue
        k = min(n, _FINGERPRINT_SAMPLES_PER_TENSOR)
        flat = t.detach().reshape(-1)
        idx = _sample_indices(n, k).to(flat.device)
        try:
            vals = flat[idx].to(torch.float32)
        except (RuntimeError, TypeError, NotImplementedError):  # e.g. fp8 without an indexing kernel
            vals = flat.to(torch.float32)[idx]
        samples.append(vals)
    if samples:
        signs = (torch.cat([s.to(samples[0].device) for s in samples]) > 0).cpu()
        h.update(signs.to(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
