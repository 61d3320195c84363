"""`make bench`: Perfusion's sampling overhead, training cost and concept cost next to ComfyUI's peers.

Everything runs on the real host (ComfyUI in this process, the pack as it imported it, ComfyUI's own
sampler, LoraLoader and TrainLoraNode) in one run, interleaved, with medians. Prints a table and writes
benchmarks/results/bench.json and bench.png. A time budget (--budget, seconds) trims repeats and skips
the optional full-size training when the machine is slow; what was skipped is recorded.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch

from benchmarks import report, synth
from benchmarks.host import load_checkpoint, median, pack, start_host
from harness.sample_images import write_toy_images
from perfusion_core.defaults import INFERENCE_BIAS, INFERENCE_TEMPERATURE

ROOT = Path(__file__).resolve().parents[1]

CONCEPT_COUNTS = (1, 2, 4, 8)
SCALING_COUNTS = (0, 1, 2, 4, 8, 12, 16)
PROMPT_LENGTHS = {"short prompt": 8, "75 tokens": 75, "150 tokens": 150}


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": os.getloadavg(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


def step_share(edit_rows: list[dict], step_s: float) -> None:
    """The edit's cost as sampling pays it (rows once per run) in % of an unpatched step."""
    for row in edit_rows:
        row["estimated_step_overhead_pct"] = 100 * row["edit_in_run_min_s"] / step_s


class Bench:
    """One benchmark run: the host, the fixtures and the synthetic files, and the results so far."""

    def __init__(self, args) -> None:
        self.args = args
        self.started = time.monotonic()
        self.deadline = self.started + args.budget
        # Reused between runs, so the C⁻¹ cache in its user dir survives. No dot in the path: ComfyUI
        # names the pack's module after its folder path, and a dot there breaks package imports.
        self.base = Path(tempfile.gettempdir()) / "comfyui-perfusion-bench"
        self.host = start_host(self.base, ("tiny",))
        self.pack = pack(self.host)
        write_toy_images(self.host.layout.input, "bench", 3)
        self.results: dict = {"machine": machine(), "skipped": [], "host_startup_s": self.host.startup_s}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def log(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.0f}s] {text}", flush=True)

    # ---- setup per model ------------------------------------------------------------------------------

    def load(self, layout: str, concepts: int):
        """(model, clip, concept files, LoRA file name) for a fixture; C⁻¹ cached for the trainers."""
        start = time.monotonic()
        model, clip, _ = load_checkpoint(self.host, layout)
        self.pack.nodes.covariance_cache.inverse_covariance(clip, 128)
        files = synth.write_concepts(
            self.pack, model, clip, self.host.layout.perfusion, concepts, seed=len(layout)
        )
        lora = f"bench_{layout}_r16.safetensors"
        synth.write_lora(model, Path(self.host.folder("loras")[0]) / lora)
        self.host.folder_paths.filename_list_cache.pop("loras", None)
        self.log(
            f"{layout}: loaded, {concepts} concept files and a rank-16 LoRA in {time.monotonic() - start:.0f}s"
        )
        return model, clip, files, lora

    # ---- measurements ---------------------------------------------------------------------------------

    def sampling(
        self, name: str, setup, variants, size: int, steps: int, repeats: int, seconds: float, tokens: int = 8
    ):
        from benchmarks import sampling

        model, clip, files, lora = setup
        prepared = [sampling.prepare(self.host, model, clip, v, files, lora, tokens) for v in variants]
        stop_at = min(time.monotonic() + seconds, self.deadline)
        series = sampling.interleaved(prepared, size, steps, repeats, skip_first=steps > 1, stop_at=stop_at)
        rows = [s.summary() for s in series]
        self.log(f"{name}: " + ", ".join(f"{r['variant']} {r['overhead_pct']:+.1f}%" for r in rows[1:]))
        return prepared, rows

    def edit_cost(self, prepared, step_s: float | None) -> list[dict]:
        from benchmarks.projection import projection_costs

        rows = []
        for p in prepared:
            if p.variant.concepts == 0:
                continue
            rows.append({"variant": p.variant.label, **projection_costs(p)})
        if step_s:
            step_share(rows, step_s)
        return rows

    def load_patch_times(self, setup, layout: str, repeats: int) -> list[dict]:
        """Concept loader vs LoraLoader: node call + load_models_gpu (where patches are applied), from the
        unpatched model each time, interleaved."""
        import comfy.model_management

        model, clip, files, lora = setup
        loader = self.host.node_class("PerfusionConceptLoader")()
        lora_loader = self.host.node_class("LoraLoader")()
        makers = {
            f"Perfusion concept ({layout})": lambda: loader.load(
                model, clip, files[0], INFERENCE_BIAS, INFERENCE_TEMPERATURE, "local"
            )[0],
            f"LoRA rank 16 ({layout})": lambda: lora_loader.load_lora(model, clip, lora, 1.0, 0.0)[0],
        }
        times: dict[str, list[float]] = {k: [] for k in makers}
        for _ in range(repeats):
            for key, make in makers.items():
                comfy.model_management.load_models_gpu([model])
                start = time.perf_counter()
                comfy.model_management.load_models_gpu([make()])
                times[key].append(time.perf_counter() - start)
        comfy.model_management.load_models_gpu([model])
        paths = {
            f"Perfusion concept ({layout})": self.host.layout.perfusion / files[0],
            f"LoRA rank 16 ({layout})": Path(self.host.folder("loras")[0]) / lora,
        }
        return [
            {"what": key, "file_kb": paths[key].stat().st_size / 1024, "load_patch_s": median(times[key])}
            for key in makers
        ]

    def scaling(self, setup) -> dict:
        from benchmarks.sampling import Variant

        by_prompt = {}
        for label, tokens in PROMPT_LENGTHS.items():
            counts = SCALING_COUNTS if label == "short prompt" else (0, 1, 4, 16)
            variants = [Variant(concepts=n) for n in counts]
            prepared, rows = self.sampling(
                f"scaling, {label}", setup, variants, 64, 4, 3, 0.04 * self.args.budget, tokens
            )
            edit_rows = {r["variant"]: r for r in self.edit_cost(prepared, rows[0]["step_s"])}
            for row in rows:
                if row["variant"] in edit_rows:
                    row["edit_pct"] = edit_rows[row["variant"]]["estimated_step_overhead_pct"]
            by_prompt[f"{label} ({rows[0]['context_tokens']} context tokens)"] = rows
        return {"size": 64, "steps": 4, "repeats": rows[0]["repeats"], "by_prompt": by_prompt}

    def memory_per_concept(self, setup, count: int = 16) -> dict:
        """RSS after applying `count` concepts and sampling once, minus before (noisy: allocator pages)."""
        import gc

        from benchmarks import sampling
        from benchmarks.host import rss

        model, clip, files, lora = setup
        gc.collect()
        before = rss()
        prepared = sampling.prepare(self.host, model, clip, sampling.Variant(concepts=count), files, lora, 8)
        sampling.step_times(prepared, 64, 1)
        gc.collect()
        per_concept = (rss() - before) / count
        file_bytes = sum(os.path.getsize(self.host.layout.perfusion / f) for f in files[:count]) / count
        return {
            "concepts": count,
            "rss_per_concept_kb": per_concept / 1024,
            "file_bytes_per_concept_kb": file_bytes / 1024,
        }

    # ---- the run --------------------------------------------------------------------------------------

    def run(self) -> dict:
        from benchmarks.sampling import Variant
        from benchmarks.training import TrainJob, run_interleaved

        res = self.results
        variants = [Variant()]
        variants += [Variant(concepts=n, lock=lock) for lock in ("local", "global") for n in CONCEPT_COUNTS]
        variants += [Variant(lora=True)]

        tiny = self.load("tiny", max(SCALING_COUNTS))
        prepared, rows = self.sampling(
            "sampling tiny 64px", tiny, variants, 64, 6, 15, 0.15 * self.args.budget
        )
        res["sampling_tiny"] = {
            "model": "tiny",
            "size": 64,
            "steps": 6,
            "repeats": rows[0]["repeats"],
            "rows": rows,
        }
        res["edit_cost_tiny"] = self.edit_cost(prepared[1:2] + prepared[3:4], rows[0]["step_s"])
        res["scaling"] = self.scaling(tiny)
        res["memory_per_concept"] = self.memory_per_concept(tiny)
        emb = self.base / "embeddings" / "bench_ti.safetensors"
        synth.write_embedding(emb)
        res["concept_cost"] = self.load_patch_times(tiny, "tiny", 3)
        res["concept_cost"].append(
            {"what": "textual inversion, 1 vector", "file_kb": emb.stat().st_size / 1024}
        )
        del prepared

        self.log("training on the tiny fixture (one process per run)")
        jobs = [
            TrainJob("perfusion", "tiny", 64, 8, False),
            TrainJob("lora", "tiny", 64, 8, True, "bf16"),
            TrainJob("perfusion", "tiny", 64, 8, True),
            TrainJob("lora", "tiny", 64, 8, True, "fp32"),
        ]
        repeats = 2 if self.left() > 600 else 1
        res["training"] = run_interleaved(jobs, repeats, self.base, self.deadline - 300, required=2)
        self.host.unload_all()

        if self.args.quick:
            res["skipped"].append("full-size model (--quick)")
            return res
        full = self.load("full", 8)
        full_variants = [Variant(), Variant(1), Variant(4), Variant(1, "global"), Variant(lora=True)]
        from benchmarks import sampling

        prepared = [
            sampling.prepare(self.host, full[0], full[1], v, full[2], full[3], 8) for v in full_variants
        ]
        res["edit_cost_full"] = self.edit_cost(prepared[1:4], None)
        step = median(sampling.step_times(prepared[0], 512, 1)[0])
        res["full_512_unpatched_step_s"] = step
        step_share(res["edit_cost_full"], step)
        res["concept_cost"] += self.load_patch_times(full, "full", 1)
        self.full_training(res)
        self.full_end_to_end(res, prepared, step)
        del prepared
        self.host.unload_all()
        self.checkpointing_memory(res)
        return res

    def full_training(self, res: dict) -> None:
        """Ours vs TrainLoraNode on the full layout (the headline training comparison), while time is left."""
        from benchmarks.training import TrainJob, run_interleaved

        self.log("training on the full SD1.5 layout at 256 px (3 steps, one process per run)")
        jobs = [
            TrainJob("perfusion", "full", 256, 3, True),
            TrainJob("lora", "full", 256, 3, True, "bf16"),
            TrainJob("lora", "full", 256, 3, True, "fp32"),
        ]
        rows = run_interleaved(jobs, 1, self.base, self.deadline - 60, required=2)
        res["training"] += rows
        if len(rows) < len(jobs):
            res["skipped"].append("full-size TrainLoraNode fp32 (time budget)")

    def checkpointing_memory(self, res: dict) -> None:
        """Memory our trainer adds with gradient checkpointing and without (benchmarks/checkpointing.py),
        when the budget has room for it (several minutes on a 2-core CPU)."""
        from benchmarks import checkpointing

        if self.left() < checkpointing.ESTIMATED_S:
            res["skipped"].append(
                "gradient checkpointing memory (time budget; python -m benchmarks.checkpointing)"
            )
            return
        self.log(
            "gradient checkpointing on vs off: full SD1.5 layout, 256 px, batch 4, 1 step (one process each)"
        )
        res["checkpointing"] = checkpointing.measure(self.base)
        checkpointing.write(res["checkpointing"], self.args.out)
        self.log(checkpointing.summary(res["checkpointing"]))

    def full_end_to_end(self, res: dict, prepared: list, step: float) -> None:
        """Whole 512 px steps per variant with what is left of the budget (noisy on CPU: ±several %)."""
        from benchmarks import sampling

        repeats = min(3, int((self.left() - 30) // (step * len(prepared) * 1.2)))
        if repeats < 1:
            res["skipped"].append(f"full 512px end-to-end variants (unpatched step {step:.0f}s; time budget)")
            return
        self.log(f"full 512px: unpatched step {step:.1f}s, {repeats} interleaved repeat(s) of 1 step each")
        series = sampling.interleaved(prepared, 512, 1, repeats, skip_first=False, warmup=False)
        res["sampling_full"] = {
            "model": "full",
            "size": 512,
            "steps": 1,
            "repeats": repeats,
            "rows": [s.summary() for s in series],
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=600, help="seconds for the whole run (default 600)")
    parser.add_argument("--quick", action="store_true", help="tiny fixture only")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    bench = Bench(args)
    results = bench.run()
    results["wall_s"] = time.monotonic() - bench.started
    results["load_average_at_end"] = os.getloadavg()
    json_path = report.write_json(results, args.out)
    print(report.table(results))
    png_path = report.plot(results, args.out)
    print(f"\nwrote {json_path} and {png_path} in {results['wall_s']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
