"""What gradient checkpointing saves: the memory our trainer adds, checkpointing on vs off, side by side.

    python -m benchmarks.checkpointing [--layout full] [--resolution 256] [--batch-size 4] [--steps 1]

Each arm is one `train_worker` process (PerfusionTrainConcept through the real executor on the fixture,
random weights): "train +MB" is its peak RSS while the trainer node runs above its RSS when the node
starts, with the checkpoint already loaded. A short warm-up run first builds the fixture and caches C⁻¹
in the base directory, so neither arm pays for them. The goal (issue 19): with checkpointing, at most
40 % of what the trainer adds without. Writes benchmarks/results/checkpointing.json; `make bench` runs
it too when its time budget allows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from .training import TrainJob, run_job

GOAL = 0.40  # memory added with checkpointing / without
ESTIMATED_S = 480  # the whole measurement on a shared 2-core CPU took 338-447 s
RESULTS = Path(__file__).resolve().parent / "results"


def measure(
    base: Path, layout: str = "full", resolution: int = 256, batch_size: int = 4, steps: int = 1
) -> dict:
    """Both arms (off first, then on), each in its own process, and their ratio."""
    started = time.monotonic()
    run_job(TrainJob("perfusion", layout, 64, 1, True), base, 1800)  # warm-up: fixture, C⁻¹ cache
    arms = {}
    for on in (False, True):
        arm_start = time.monotonic()
        row = run_job(TrainJob("perfusion", layout, resolution, steps, on, batch_size=batch_size), base, 1800)
        row["wall_s"] = time.monotonic() - arm_start
        if not row["step_gaps"]:  # one step: no gap between progress events to time a step by
            del row["step_s"], row["step_gaps"]
        arms["on" if on else "off"] = row
        print(
            f"  checkpointing {'on ' if on else 'off'}: trainer adds {row['train_peak_delta_mb']:,.0f} MB",
            flush=True,
        )
    ratio = arms["on"]["train_peak_delta_mb"] / arms["off"]["train_peak_delta_mb"]
    return {
        "layout": layout,
        "resolution": resolution,
        "batch_size": batch_size,
        "steps": steps,
        "off": arms["off"],
        "on": arms["on"],
        "added_on_over_off": ratio,
        "goal": GOAL,
        "goal_met": ratio <= GOAL,
        "wall_s": time.monotonic() - started,
    }


def summary(result: dict) -> str:
    off, on = result["off"], result["on"]
    return (
        f"gradient checkpointing, {result['layout']} layout, {result['resolution']} px, batch "
        f"{result['batch_size']}, {result['steps']} step(s): the trainer adds {on['train_peak_delta_mb']:,.0f} MB "
        f"with it, {off['train_peak_delta_mb']:,.0f} MB without (peak RSS {on['peak_rss_mb']:,.0f} / "
        f"{off['peak_rss_mb']:,.0f} MB): {100 * result['added_on_over_off']:.0f} % (goal ≤ "
        f"{100 * GOAL:.0f} %: {'met' if result['goal_met'] else 'missed'}); run "
        f"{on['run_s']:.0f} s / {off['run_s']:.0f} s"
    )


def write(result: dict, out_dir: Path) -> Path:
    """results/checkpointing.json, with the machine's load (other processes inflate nothing here
    but the wall time)."""
    result["machine"] = {"cores": os.cpu_count(), "load_average_at_end": os.getloadavg()}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "checkpointing.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", default="full")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    base = Path(tempfile.gettempdir()) / "comfyui-perfusion-bench"  # shared with run.py: one C⁻¹ cache
    result = measure(base, args.layout, args.resolution, args.batch_size, args.steps)
    path = write(result, args.out)
    print(summary(result))
    print(f"wrote {path} in {result['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
