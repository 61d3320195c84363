"""The edit's cost per model family, and the concept file beside a LoRA and an embedding for SDXL.

    .venv/bin/python -m benchmarks.families            # results/families.json
    .venv/bin/python -m benchmarks.families --quick    # fewer repeats

Layers, widths and context width come from ComfyUI's own UNetModel built on the meta device for the
real SD1.5 and SDXL base layouts (16 and 70 cross-attention layers); weights are random (timing does
not depend on them). Per UNet evaluation, every to_k/to_v projection runs on the cond+uncond text
context (2 × 77 tokens × D): the host's linear alone ("unpatched") and the same linear plus the gated
edit for 1 and 4 concepts, with the output rows precomputed as inside a sampling run
(nodes/sampling_run.py). Interleaved repeats; min and median. The K/V input is the text, whatever the
image size, so the cost at 1024 px equals the cost at 64 px; its share of a step needs the step time
of the full model, which this CPU cannot give at 1024 px (a GPU check).

File sizes are real files: an SDXL concept (save_concept, the 70 layers), a rank-8 / rank-32 LoRA in
ComfyUI's key format on every attention projection of the SDXL UNet (fp16), and a one-vector SDXL
textual-inversion embedding (clip_l 768 + clip_g 1280, fp32), as ComfyUI loads them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import safetensors.torch
import torch

from benchmarks.host import median
from harness.fixture_checkpoint import FixtureSpec, import_comfy, unet_shapes
from harness.paths import comfyui_path
from perfusion_core.concept import Concept, ConceptInfo
from perfusion_core.concept_writer import save_concept
from perfusion_core.defaults import INFERENCE_BIAS, INFERENCE_TEMPERATURE
from perfusion_core.gated_edit import GatedRank1Edit

RESULTS = Path(__file__).resolve().parent / "results"
FAMILIES = {
    "SD15": (FixtureSpec("full", 768), (("l", 768),)),
    "SD20": (FixtureSpec("full", 1024), (("h", 1024),)),
    "SDXL": (FixtureSpec("sdxl_full", 2048), (("l", 768), ("g", 1280))),
}


def attention_layers(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, int]]:
    """Cross-attention layer name -> (width d, context D), from the to_k weights' shapes."""
    suffix = ".to_k.weight"
    return {k.removesuffix(suffix): shapes[k] for k in shapes if k.endswith(suffix) and ".attn2." in k}


def time_projections(layers: dict[str, tuple[int, int]], concepts: tuple[int, ...], repeats: int) -> dict:
    generator = torch.Generator().manual_seed(0)
    context_dim = next(iter(layers.values()))[1]
    x = torch.randn(2, 77, context_dim, generator=generator)
    projections = []
    for width, d_in in layers.values():
        for _ in ("k", "v"):
            projections.append(torch.nn.Linear(d_in, width, bias=False))
    edits = {}
    for j in concepts:
        i_star = torch.randn(j, context_dim, generator=generator)
        edit = GatedRank1Edit(i_star, i_star, [INFERENCE_BIAS] * j, [INFERENCE_TEMPERATURE] * j)
        edits[j] = [(edit, torch.randn(2 * j, p.out_features, generator=generator)) for p in projections]

    def unpatched() -> None:
        for p in projections:
            p(x)

    def patched(j: int):
        def call() -> None:
            for p, (edit, rows) in zip(projections, edits[j], strict=True):
                edit.apply(p(x), x, rows)

        return call

    variants = {"unpatched": unpatched, **{f"{j} concept(s)": patched(j) for j in concepts}}
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.inference_mode():
        for fn in variants.values():
            fn()  # warm-up
        for _ in range(repeats):
            for name, fn in variants.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    base_min, base_med = min(times["unpatched"]), median(times["unpatched"])
    out = {
        "layers": len(layers),
        "projections": len(projections),
        "context": list(x.shape),
        "repeats": repeats,
    }
    for name, values in times.items():
        row = {"min_ms": 1e3 * min(values), "median_ms": 1e3 * median(values)}
        if name != "unpatched":
            row["edit_min_ms"] = row["min_ms"] - 1e3 * base_min
            row["ratio_min"] = min(values) / base_min
            row["ratio_median"] = median(values) / base_med
        out[name] = row
    return out


def synthetic_concept(family: str, layers: dict[str, tuple[int, int]]) -> Concept:
    """A concept file's worth of random values with the family's layers and encoders."""
    generator = torch.Generator().manual_seed(1)
    encoders = FAMILIES[family][1]
    width = sum(w for _, w in encoders)
    i_star = torch.randn(width, generator=generator)
    return Concept(
        info=ConceptInfo(
            word="hugsy",
            superclass="teddy",
            model_family=family,
            encoder_fingerprint="sha256:" + "0" * 64,
            steps=400,
            training_settings={"resolution": "1024"},
            clip_layer=-2,
            text_encoders=encoders,
        ),
        token_embedding=torch.randn(width, generator=generator) * 0.01,
        i_star=i_star,
        u=i_star.clone(),
        superclass_encoding=torch.randn(width, generator=generator),
        v_targets={name: torch.randn(w, generator=generator) for name, (w, _) in layers.items()},
    )


def lora(shapes: dict[str, tuple[int, ...]], rank: int) -> dict[str, torch.Tensor]:
    """A LoRA (ComfyUI/kohya key format, fp16) on every attention projection of the UNet."""
    out = {}
    for key, shape in shapes.items():
        if ".attn" in key and key.endswith(("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight")):
            name = "lora_unet_" + key.removeprefix("diffusion_model.").removesuffix(".weight").replace(
                ".", "_"
            )
            out[f"{name}.lora_down.weight"] = torch.zeros(rank, shape[1], dtype=torch.float16)
            out[f"{name}.lora_up.weight"] = torch.zeros(shape[0], rank, dtype=torch.float16)
            out[f"{name}.alpha"] = torch.tensor(float(rank), dtype=torch.float16)
    return out


def file_sizes(shapes: dict[str, dict[str, tuple[int, ...]]]) -> dict:
    """Bytes of real files: a concept per family; for SDXL also LoRAs and an embedding."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = {}
        for family, family_shapes in shapes.items():
            layers = attention_layers(family_shapes)
            concept = synthetic_concept(family, layers)
            paths[f"{family} Perfusion concept ({len(layers)} layers)"] = save_concept(
                concept, folder / f"{family}.safetensors"
            )
        sdxl_shapes = shapes["SDXL"]
        for rank in (8, 32):
            path = folder / f"lora{rank}.safetensors"
            safetensors.torch.save_file(lora(sdxl_shapes, rank), str(path))
            paths[f"SDXL LoRA rank {rank}, attention projections (fp16)"] = path
        path = folder / "ti.safetensors"
        safetensors.torch.save_file(
            {"clip_l": torch.zeros(1, 768), "clip_g": torch.zeros(1, 1280)}, str(path)
        )
        paths["SDXL textual inversion, 1 vector (clip_l + clip_g)"] = path
        return {what: path.stat().st_size for what, path in paths.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 repeats instead of 30")
    parser.add_argument("--out", type=Path, default=RESULTS / "families.json")
    args = parser.parse_args(argv)
    import_comfy(comfyui_path())
    repeats = 5 if args.quick else 30
    result = {"torch_threads": torch.get_num_threads(), "families": {}}
    shapes = {}
    for family, (spec, _) in FAMILIES.items():
        shapes[family] = {f"diffusion_model.{k}": v for k, v in unet_shapes(spec).items()}
        row = time_projections(attention_layers(shapes[family]), (1, 4), repeats)
        result["families"][family] = row
        edits = [(k, v) for k, v in row.items() if isinstance(v, dict) and "edit_min_ms" in v]
        print(
            f"{family}: {row['layers']} layers, context {row['context']}: unpatched "
            f"{row['unpatched']['min_ms']:.2f} ms; "
            + "; ".join(
                f"{k} +{v['edit_min_ms']:.2f} ms (x{v['ratio_min']:.3f} fastest, x{v['ratio_median']:.3f} median)"
                for k, v in edits
            )
        )
    result["file_bytes"] = file_sizes(shapes)
    for what, size in result["file_bytes"].items():
        print(f"{what}: {size / 1024:.1f} KB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
