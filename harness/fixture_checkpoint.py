"""Small, deterministic, random-weight checkpoints that ComfyUI loads as a real model family.

``fixture_checkpoint("tiny")`` returns the path of a cached ``.ckpt`` that the host's
``CheckpointLoaderSimple`` detects as **SD15** (``model.model.model_config`` is
``comfy.supported_models.SD15``). Its keys come from the host's own classes (``UNetModel``, the full
12-layer CLIP-L text model from ``comfy/sd1_clip_config.json``, and TAESD as the VAE), instantiated on
the meta device, so the shapes are exactly what the loader expects for that ComfyUI release.

What the host checks to call a checkpoint SD15: UNet keys under ``model.diffusion_model.``,
``model_channels`` 320, ``context_dim`` 768, conv ``proj_in``/``proj_out`` and no ``adm`` input. The
number of levels, res blocks and transformer depths are free, which gives the layouts:

================  =====================================================  ============  ==========
layout            UNet                                                   attn2 layers  file size
================  =====================================================  ============  ==========
``tiny``          1 level (320), 1 res block, no middle block            3             ~3 MB
``two_level``     levels 320/640, 1 res block each, middle block         7             ~4 MB
``full``          the real SD1.5 UNet ([1,2,4,4], 2 res blocks, depth 1)  16            ~7 MB
``sdxl``          SDXL's depths [0,0,2,2,10,10] at widths 320/640/320    31            ~5 MB
================  =====================================================  ============  ==========

``sdxl`` is an **SDXL-family** checkpoint (``context_dim`` 2048, detected as ``SDXL``): ComfyUI matches
SDXL by 320 model channels, linear ``proj_in``, context 2048, ``adm_in_channels`` 2816 and the per-block
transformer depths, not by the block widths, so the 1280-wide level is built 320 wide and the output
and middle depths are 1. Its text encoders are the real CLIP-L and OpenCLIP-bigG layouts (32 layers,
1280 wide: ~1.1 B parameters once loaded, ~4 GB in fp32), stored as SDXL checkpoints store them
(``conditioner.embedders.0.transformer.``, ``conditioner.embedders.1.model.``).

Variants:

* ``seed``: other random weights, same layout and family ("a fine-tune of the same base").
* ``context_dim=1024``: an **SD2.x-family** checkpoint for negative tests. ``context_dim`` 1024 with a
  conv ``proj_in`` matches no model ComfyUI knows ("Could not detect model type"), so this variant uses
  what real SD2 checkpoints have: linear ``proj_in`` and the 24-layer OpenCLIP-H text encoder (from
  ``comfy/text_encoders/sd2_clip_config.json``, stored under ``cond_stage_model.model.``). ComfyUI
  0.3.75 detects it as ``SD20`` (EPS prediction: the zero ``norm1`` biases select EPS over V), its
  ``attn2.to_k.weight`` is ``[C, 1024]`` and a stock graph samples finite images from it.

Size trick: every weight tensor is a strided view into one shared random buffer per init scale, and
``torch.save`` stores each underlying storage once, so files stay a few MB (plain fp16 weights would be
~275 MB because of CLIP). The host loads ``.ckpt`` with ``weights_only=True``; views load fine. Only
suitable for test fixtures: rows overlap, so weights are far from i.i.d.

Building imports ``comfy`` modules, which must not happen in a process that later starts an in-process
ComfyUI host with its own argument parsing, so :func:`fixture_checkpoint` builds in a subprocess::

    python -m harness.fixture_checkpoint OUT.ckpt --layout tiny [--context-dim 768] [--seed 0]

Output bytes are a pure function of (layout, context_dim, seed, FIXTURE_VERSION, ComfyUI's module
definitions): seeds come from ``zlib.crc32`` (never the per-process salted ``hash()``), and the archive
is serialised to memory first so the zip's internal record prefix does not depend on the file name.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from harness.builder import build_in_subprocess
from harness.paths import cache_dir, comfyui_path

__all__ = [
    "FIXTURE_VERSION",
    "LAYOUTS",
    "FixtureSpec",
    "build_state_dict",
    "fixture_checkpoint",
    "fixture_checkpoint_name",
]

# Bump whenever the bytes a given spec produces change (generator, init, key set, dtype...).
FIXTURE_VERSION = "v1"

# UNet settings on top of the family's base config; ``transformer_depth_output`` is consumed with
# ``pop()`` by UNetModel, so its last entry belongs to output_blocks.0.
LAYOUTS: dict[str, dict] = {
    "tiny": dict(
        channel_mult=[1],
        num_res_blocks=[1],
        transformer_depth=[1],
        transformer_depth_output=[1, 1],
        transformer_depth_middle=-2,  # -2: no middle block at all
    ),
    # An inpainting model: 9 input channels (latent + mask + masked-image latent), read as SD15 inpaint.
    "tiny_inpaint": dict(
        channel_mult=[1],
        num_res_blocks=[1],
        transformer_depth=[1],
        transformer_depth_output=[1, 1],
        transformer_depth_middle=-2,
        in_channels=9,
    ),
    "two_level": dict(
        channel_mult=[1, 2],
        num_res_blocks=[1, 1],
        transformer_depth=[1, 1],
        transformer_depth_output=[1, 1, 1, 1],
        transformer_depth_middle=1,
    ),
    # SDXL family: ComfyUI matches the per-block transformer depths [0, 0, 2, 2, 10, 10] (and 320
    # channels, linear proj_in, context 2048, adm 2816), not the widths, so the blocks are 320/640
    # wide instead of 320/640/1280 and the output/middle depths are cut to 1.
    "sdxl": dict(
        channel_mult=[1, 2, 1],
        num_res_blocks=[2, 2, 2],
        transformer_depth=[0, 0, 2, 2, 10, 10],
        transformer_depth_output=[0, 0, 0, 1, 1, 1, 1, 1, 1],
        transformer_depth_middle=1,
    ),
    # The real SDXL base UNet (70 cross-attention layers, 2.6 B parameters): shapes for benchmarks.
    "sdxl_full": dict(
        channel_mult=[1, 2, 4],
        num_res_blocks=[2, 2, 2],
        transformer_depth=[0, 0, 2, 2, 10, 10],
        transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10],
        transformer_depth_middle=10,
    ),
    "full": dict(
        channel_mult=[1, 2, 4, 4],
        num_res_blocks=[2, 2, 2, 2],
        transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
        transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        transformer_depth_middle=1,
    ),
}

# Family-specific UNet settings, keyed by context_dim (what comfy.model_detection + the matching
# supported_models class would produce).
_FAMILIES: dict[int, dict] = {
    768: dict(use_linear_in_transformer=False, num_heads=8, num_head_channels=-1),  # SD15
    1024: dict(use_linear_in_transformer=True, num_heads=-1, num_head_channels=64),  # SD20
    2048: dict(  # SDXL: the pooled bigG output and six size embeddings enter through `y`
        use_linear_in_transformer=True,
        num_heads=-1,
        num_head_channels=64,
        adm_in_channels=2816,
        num_classes="sequential",
    ),
}
_SDXL_LAYOUTS = frozenset({"sdxl", "sdxl_full"})

_UNET_BASE = dict(
    image_size=32,
    use_spatial_transformer=True,
    legacy=False,
    use_checkpoint=False,
    adm_in_channels=None,
    in_channels=4,
    out_channels=4,
    model_channels=320,
    use_temporal_resblock=False,
    use_temporal_attention=False,
)

_BUILD_TIMEOUT_S = 900


@dataclass(frozen=True)
class FixtureSpec:
    """What to build. ``context_dim`` 768 = SD15 family, 1024 = SD2.x family, 2048 with layout
    ``sdxl`` = SDXL family (see module doc)."""

    layout: str = "tiny"
    context_dim: int = 768
    seed: int = 0

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown fixture layout {self.layout!r}; choose from {sorted(LAYOUTS)}")
        if self.context_dim not in _FAMILIES:
            raise ValueError(f"context_dim must be one of {sorted(_FAMILIES)}, got {self.context_dim}")
        if (self.layout in _SDXL_LAYOUTS) != (self.context_dim == 2048):
            raise ValueError(
                f"layout {self.layout!r} and context_dim {self.context_dim} do not make a family"
            )
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")

    @property
    def filename(self) -> str:
        parts = [f"fixture-sd15-{self.layout}"] if self.context_dim != 2048 else ["fixture-sdxl"]
        if self.context_dim == 1024:
            parts.append(f"ctx{self.context_dim}")
        if self.seed:
            parts.append(f"seed{self.seed}")
        parts.append(FIXTURE_VERSION)
        return "-".join(parts) + ".ckpt"

    def unet_config(self) -> dict:
        cfg = {**_UNET_BASE, "context_dim": self.context_dim, **_FAMILIES[self.context_dim]}
        cfg.update({k: list(v) if isinstance(v, list) else v for k, v in LAYOUTS[self.layout].items()})
        return cfg


def family_context_dim(layout: str) -> int:
    """The context width a layout is built for unless asked otherwise (SDXL layouts: 2048)."""
    return 2048 if layout in _SDXL_LAYOUTS else 768


def fixture_checkpoint_name(layout: str = "tiny", *, context_dim: int | None = None, seed: int = 0) -> str:
    """The file name (the ``ckpt_name`` a prompt uses) of a fixture, without building it."""
    return FixtureSpec(layout, context_dim or family_context_dim(layout), seed).filename


def fixture_checkpoint(
    layout: str = "tiny",
    dest_dir: str | os.PathLike | None = None,
    *,
    context_dim: int | None = None,
    seed: int = 0,
) -> Path:
    """Path of the fixture checkpoint, building it (in a subprocess) only when it is missing.

    ``dest_dir`` defaults to :func:`harness.paths.cache_dir`. The file name holds the layout, the
    variant and :data:`FIXTURE_VERSION`, so a changed generator never reuses a stale file.
    """
    spec = FixtureSpec(layout, context_dim or family_context_dim(layout), seed)
    dest = Path(dest_dir) if dest_dir is not None else cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / spec.filename
    if out.is_file():
        return out
    args = ("--layout", spec.layout, "--context-dim", str(spec.context_dim), "--seed", str(spec.seed))
    return build_in_subprocess(
        "harness.fixture_checkpoint", out, *args, what=f"fixture {spec}", timeout=_BUILD_TIMEOUT_S
    )


# ----------------------------------------------------------------------------------------------------
# Subprocess side: everything below imports torch / comfy lazily.


def import_comfy(comfy_root: Path) -> None:
    """Make ``comfy`` importable in this (builder) process with CPU-only device selection."""
    if str(comfy_root) not in sys.path:  # the host's folder: `comfy` is not an installed package
        sys.path.insert(0, str(comfy_root))
    from comfy.cli_args import args  # parsed with [] because args parsing is not enabled

    args.cpu = True  # before anything imports comfy.model_management (no CUDA probing)


def _meta_shapes(ctor) -> dict[str, tuple[int, ...]]:
    import torch

    with torch.device("meta"):
        module = ctor()
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def unet_shapes(spec: FixtureSpec) -> dict[str, tuple[int, ...]]:
    """The UNet's state-dict shapes for `spec` (ComfyUI's UNetModel on the meta device; imports comfy)."""
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    cfg = spec.unet_config()
    return _meta_shapes(lambda: UNetModel(**cfg, device="meta", operations=comfy.ops.disable_weight_init))


def _clip_shapes(config_path: Path, keep_projection: bool) -> dict[str, tuple[int, ...]]:
    import comfy.clip_model
    import comfy.ops
    import torch

    config = json.loads(config_path.read_text())
    shapes = _meta_shapes(
        lambda: comfy.clip_model.CLIPTextModel(config, torch.float32, "meta", comfy.ops.manual_cast)
    )
    if not keep_projection:
        # SD1.x checkpoints ship no text_projection (SD1 uses the unprojected pooled output).
        shapes.pop("text_projection.weight", None)
    return shapes


def _taesd_shapes() -> dict[str, tuple[int, ...]]:
    import comfy.taesd.taesd

    return _meta_shapes(lambda: comfy.taesd.taesd.TAESD())


class _StridedInit:
    """Deterministic weights as overlapping strided windows into a few shared random buffers.

    One buffer per init scale: every tensor of that scale is a window starting at an offset derived
    from its key (crc32), so values do not depend on the order tensors are requested in.
    """

    _MIN_BUFFER = 1 << 16

    def __init__(self, seed: int, dtype):
        import torch

        self.seed = seed
        self.dtype = dtype
        self.spans: dict[str, int] = {}  # scale key -> required buffer length
        self.requests: list[tuple[str, str, tuple[int, ...], float]] = []
        self._torch = torch

    @staticmethod
    def _strides(shape: tuple[int, ...]) -> list[int]:
        # Last dim contiguous, second-to-last steps 7 elements, outer dims grow geometrically: rows
        # are distinct shifted windows, total span stays ~7x the row count.
        strides = [1] * len(shape)
        for i in range(len(shape) - 2, -1, -1):
            strides[i] = 7 if i == len(shape) - 2 else strides[i + 1] * 3 + 1
        return strides

    @classmethod
    def _span(cls, shape: tuple[int, ...]) -> int:
        return 1 + sum((s - 1) * st for s, st in zip(shape, cls._strides(shape), strict=True))

    def plan(self, key: str, shape: tuple[int, ...], std: float) -> None:
        skey = f"{std:.9e}"
        self.spans[skey] = max(self.spans.get(skey, 0), self._span(shape))
        self.requests.append((key, skey, shape, std))

    def realise(self) -> dict:
        torch = self._torch
        buffers = {}
        for skey, span in sorted(self.spans.items()):
            n = max(2 * span, self._MIN_BUFFER)
            gen = torch.Generator().manual_seed(zlib.crc32(f"{self.seed}|{skey}".encode()))
            buffers[skey] = (torch.randn(n, generator=gen) * float(skey)).to(self.dtype)
        out = {}
        for key, skey, shape, _std in self.requests:
            buf = buffers[skey]
            span = self._span(shape)
            start = zlib.crc32(f"{self.seed}|{key}".encode()) % (buf.numel() - span + 1)
            out[key] = torch.as_strided(buf, shape, self._strides(shape), start)
        return out


def build_state_dict(spec: FixtureSpec, comfy_root: Path | None = None) -> dict:
    """The checkpoint's state dict (tensors share storages). Imports ``comfy``: call it only in a
    process that will not host ComfyUI afterwards (see :func:`fixture_checkpoint`)."""
    comfy_root = Path(comfy_root) if comfy_root is not None else comfyui_path()
    import_comfy(comfy_root)
    import torch

    dtype = torch.float16
    init = _StridedInit(spec.seed, dtype)
    consts: dict[float, torch.Tensor] = {}
    sd: dict[str, torch.Tensor] = {}

    def const(shape, value):
        if value not in consts:
            consts[value] = torch.full((1,), value, dtype=dtype)
        return consts[value].expand(shape)

    def add(prefix: str, shapes: dict[str, tuple[int, ...]]):
        for k, shape in shapes.items():
            key = prefix + k
            if len(shape) == 0:
                continue  # scalars (TAESD vae_scale / vae_shift) are set explicitly
            if k.rsplit(".", 1)[-1] == "bias":
                sd[key] = const(shape, 0.0)
            elif len(shape) == 1:  # norm weights
                sd[key] = const(shape, 1.0)
            else:
                std = 1.0 / math.sqrt(math.prod(shape[1:]))
                if "embedding" in k:
                    std = 0.02 if "token" in k else 0.01
                init.plan(key, shape, std)

    add("model.diffusion_model.", unet_shapes(spec))
    clip_l = comfy_root / "comfy" / "sd1_clip_config.json"
    if spec.context_dim == 768:
        add("cond_stage_model.transformer.", _clip_shapes(clip_l, False))
    elif spec.context_dim == 2048:  # CLIP-L and OpenCLIP-bigG, as SDXL checkpoints store them
        add("conditioner.embedders.0.transformer.", _clip_shapes(clip_l, False))
        add(
            "conditioner.embedders.1.model.transformer.",
            _clip_shapes(comfy_root / "comfy" / "clip_config_bigg.json", True),
        )
    else:
        clip_cfg = comfy_root / "comfy" / "text_encoders" / "sd2_clip_config.json"
        add("cond_stage_model.model.transformer.", _clip_shapes(clip_cfg, True))
    add("first_stage_model.", _taesd_shapes())
    sd.update(init.realise())
    sd["first_stage_model.vae_scale"] = torch.tensor(0.18215, dtype=dtype)
    sd["first_stage_model.vae_shift"] = torch.tensor(0.0, dtype=dtype)
    return dict(sorted(sd.items()))


def _serialise(sd: dict) -> bytes:
    import torch

    buf = io.BytesIO()  # a file object: the zip record prefix is the fixed "archive/"
    torch.save({"state_dict": sd}, buf)
    return buf.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m harness.fixture_checkpoint", description=__doc__.split("\n")[0]
    )
    ap.add_argument("out", type=Path)
    ap.add_argument("--layout", default="tiny", choices=sorted(LAYOUTS))
    ap.add_argument("--context-dim", type=int, default=None, choices=sorted(_FAMILIES))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    spec = FixtureSpec(a.layout, a.context_dim or family_context_dim(a.layout), a.seed)
    t0 = time.perf_counter()
    sd = build_state_dict(spec)
    data = _serialise(sd)
    _write_atomic(a.out, data)
    n_params = sum(v.numel() for v in sd.values())
    n_attn2 = sum(1 for k in sd if k.endswith(".attn2.to_k.weight"))
    print(
        f"wrote {a.out}: {len(data) / 2**20:.2f} MiB, {len(sd)} tensors, {n_params / 1e6:.1f}M params, "
        f"{n_attn2} attn2 layers, {time.perf_counter() - t0:.1f}s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
