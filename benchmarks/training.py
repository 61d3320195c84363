"""Runs the trainer workers (one process each, interleaved) and folds repeats into medians."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.paths import repo_root

from .host import median


@dataclass(frozen=True)
class TrainJob:
    trainer: str  # "perfusion" | "lora"
    layout: str
    resolution: int
    steps: int
    gradient_checkpointing: bool
    dtype: str = "fp32"  # TrainLoraNode's training/lora dtype (ours runs in the model's dtype)
    batch_size: int = 1  # ours only (TrainLoraNode runs at batch 1 here)

    def argv(self, base: Path) -> list[str]:
        argv = [sys.executable, "-m", "benchmarks.train_worker", "--base", str(base)]
        argv += ["--layout", self.layout, "--trainer", self.trainer, "--steps", str(self.steps)]
        argv += ["--resolution", str(self.resolution), "--dtype", self.dtype]
        argv += ["--batch-size", str(self.batch_size)]
        return argv + (["--gradient-checkpointing"] if self.gradient_checkpointing else [])


def run_job(job: TrainJob, base: Path, timeout: float) -> dict:
    done = subprocess.run(
        job.argv(base), cwd=repo_root(), capture_output=True, text=True, timeout=max(timeout, 30), check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"training worker {job} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def run_interleaved(
    jobs: list[TrainJob], repeats: int, base: Path, deadline: float, required: int = 0
) -> list[dict]:
    """Each job `repeats` times, round-robin, while time is left; one row (medians) per job.

    The first `required` jobs run once whatever the deadline (the headline comparison)."""
    runs: dict[TrainJob, list[dict]] = {job: [] for job in jobs}
    for _ in range(repeats):
        for index, job in enumerate(jobs):
            left = deadline - time.monotonic()
            must = index < required and not runs[job]
            if not must and (left < 20 or (runs[job] and left < 2 * max(r["wall_s"] for r in runs[job]))):
                continue
            start = time.monotonic()
            result = run_job(job, base, max(left, 600))
            result["wall_s"] = time.monotonic() - start
            runs[job].append(result)
            print(
                f"  {job.trainer:<9} {job.layout} {job.resolution}px: {result['step_s']:.3f} s/step",
                flush=True,
            )
    rows = []
    for job, results in runs.items():
        if not results:
            continue
        row = asdict(job)
        for key in ("step_s", "peak_rss_mb", "train_peak_delta_mb", "wall_s"):
            row[key] = median([r[key] for r in results])
        row["repeats"] = len(results)
        rows.append(row)
    return rows
