"""Training and sampling where users run them: one command for a GPU machine (<= 8 minutes).

    python -m benchmarks.gpu_check            # full SD1.5 layout, 512 px, batch 4 x 4, 50 steps
    python -m benchmarks.gpu_check --quick    # tiny fixture, 64 px, 3 steps: checks the script on a CPU

The checkpoint is the random-weight full SD1.5 layout (859M parameters, the 16 cross-attention
layers), loaded by ComfyUI's own CheckpointLoaderSimple in the host's default dtype for the device
(fp16 on most GPUs), and trained with `precision = auto`, as a user's first run would be. Prints:
- the first-step gradients of the word embedding and every V target in that dtype against fp32 on
  the same weights (cosine, and entries that underflowed to zero where fp32's are not);
- seconds per optimizer step, peak VRAM (torch's allocator) and steps skipped for fp16 overflow;
- sampling overhead of 1 and 4 concepts (whole steps, interleaved with the unpatched model).
Random weights: the figures are about speed, memory and numerics, not image quality.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from pathlib import Path

import torch

from harness.sample_images import write_toy_images

from .host import load_checkpoint, median, pack, start_host

WORD, SUPERCLASS = "hugsy", "teddy"


def load_images(host, count: int) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    names = write_toy_images(host.layout.input, "gpucheck", count)
    arrays = [
        np.asarray(Image.open(host.layout.input / n).convert("RGB"), dtype=np.float32) / 255 for n in names
    ]
    return torch.from_numpy(np.stack(arrays))


def gradient_comparison(trainer, models, pixels, config, covariance_prompts: int) -> dict:
    """Cosine of each trained tensor's first gradient (auto precision vs fp32, same weights and batch)."""
    from perfusion_core.training import plan_batch

    grads, dtypes = {}, {}
    for precision in ("auto", "fp32"):
        with torch.inference_mode(False), torch.enable_grad():
            run = trainer.open_run(
                *models, pixels, None, WORD, SUPERCLASS, config,
                covariance_prompts=covariance_prompts, precision=precision,
            )  # fmt: skip
            generator = torch.Generator().manual_seed(0)
            batch = plan_batch(generator, run.n_images, config.templates, config.batch_size, 0.5)
            grads[precision] = run.gradients(batch, run.noise(config.batch_size, generator))
            dtypes[precision] = run.precision.name
            run.close()
    rows = {}
    for name, ref in grads["fp32"].items():
        got = grads["auto"][name]
        rows[name] = {
            "cosine": float(torch.nn.functional.cosine_similarity(got.flatten(), ref.flatten(), dim=0)),
            "underflowed": int(((got == 0) & (ref != 0)).sum()),
            "norm_fp32": float(ref.norm()),
        }
    return {"dtype": dtypes["auto"], "tensors": rows}


def train(trainer, models, pixels, config, covariance_prompts: int, device: torch.device) -> dict:
    stamps: list[float] = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = trainer.train_concept(
        *models, pixels, None, WORD, SUPERCLASS, config,
        covariance_prompts=covariance_prompts, on_step=lambda *_: stamps.append(time.perf_counter()),
    )  # fmt: skip
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return {
        "steps": config.steps,
        "step_s": median(gaps),
        "peak_vram_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "eval_before": result.eval_before,
        "eval_after": result.eval_after,
        "precision": result.concept.info.training_settings.get("precision"),
    }


def sampling_overhead(host, the_pack, models, size: int, steps: int, repeats: int) -> list[dict]:
    from . import sampling, synth

    model, clip, _ = models
    files = synth.write_concepts(the_pack, model, clip, host.layout.root / "models" / "perfusion", 4)
    variants = [sampling.Variant(0), sampling.Variant(1), sampling.Variant(4)]
    prepared = [sampling.prepare(host, model, clip, v, files, "", 8) for v in variants]
    series = sampling.interleaved(prepared, size, steps, repeats, skip_first=steps > 1)
    return [s.summary() for s in series]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny fixture, 64 px, 3 steps (CPU check)")
    parser.add_argument(
        "--out", type=Path, help="JSON report (default results/gpu_check.json; --quick: a temp file)"
    )
    args = parser.parse_args()
    from perfusion_core.training import TrainingConfig

    layout, size = ("tiny", 64) if args.quick else ("full", 512)
    steps, batch, accumulation = (3, 2, 2) if args.quick else (50, 4, 4)
    covariance_prompts = 128 if args.quick else 2000
    host = start_host(Path(tempfile.gettempdir()) / "comfyui-perfusion-gpucheck", (layout,))
    the_pack = pack(host)
    trainer = the_pack.nodes.trainer
    import comfy.model_management  # importable once the host has started

    device = comfy.model_management.get_torch_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    print(
        f"device: {name}; layout {layout}, {size} px, batch {batch} x {accumulation}, {steps} steps",
        flush=True,
    )

    models = load_checkpoint(host, layout)
    unet = models[0].model
    print(f"model stored as {unet.get_dtype()}, computed in {unet.manual_cast_dtype or unet.get_dtype()}")
    pixels = load_images(host, 4)
    config = TrainingConfig(
        steps=steps, batch_size=batch, grad_accumulation=accumulation, resolution=size, seed=0,
        lr_v=0.03, lr_embedding=0.006,
    )  # fmt: skip
    started = time.monotonic()
    report = {"device": name, "layout": layout, "resolution": size, "batch": [batch, accumulation]}
    report["gradients"] = gradient_comparison(trainer, models, pixels, config, covariance_prompts)
    for tensor, row in report["gradients"]["tensors"].items():
        print(f"  grad {tensor[-60:]:>60}: cosine {row['cosine']:.5f}, underflowed {row['underflowed']}")
    report["training"] = train(trainer, models, pixels, config, covariance_prompts, device)
    t = report["training"]
    vram = f"{t['peak_vram_mb']:.0f} MB" if t["peak_vram_mb"] is not None else "n/a (not CUDA)"
    print(
        f"training ({t['precision']}): {t['step_s']:.3f} s/step, peak VRAM {vram}, "
        f"objective {t['eval_before']:.5f} -> {t['eval_after']:.5f}",
        flush=True,
    )
    comfy.model_management.unload_all_models()  # the training clones go; the loaded weights stay
    gc.collect()
    report["sampling"] = sampling_overhead(
        host, the_pack, models, size, steps=2 if args.quick else 20, repeats=1 if args.quick else 3
    )
    for row in report["sampling"][1:]:
        print(
            f"sampling {row['variant']}: {row['step_s']:.4f} s/step, {row['overhead_pct']:+.2f}% vs unpatched"
        )
    report["wall_s"] = time.monotonic() - started
    if args.out is None:
        results = Path(tempfile.gettempdir()) if args.quick else Path(__file__).parent / "results"
        args.out = results / "gpu_check.json"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"written {args.out} ({report['wall_s']:.0f} s after loading)")


if __name__ == "__main__":
    main()
