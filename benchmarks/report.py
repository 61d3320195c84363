"""The results table (printed and in JSON) and the plot."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _fmt(value, width: int, decimals: int) -> str:
    return f"{'—':>{width}}" if value is None else f"{value:>{width}.{decimals}f}"


def table(results: dict) -> str:
    """Plain-text table of the headline numbers."""
    lines = []

    def section(title: str, header: str) -> None:
        lines.extend(["", title, header, "-" * len(header)])

    for key, title in (
        ("sampling_tiny", "tiny fixture, 64 px"),
        ("sampling_full", "full SD1.5 layout, 512 px"),
    ):
        block = results.get(key)
        if not block:
            continue
        section(
            f"Sampling ({title}, euler cfg 7, {block['steps']} steps x {block['repeats']} repeats, interleaved)",
            f"{'variant':<22}{'s/step':>10}{'vs unpatched':>14}{'fastest steps':>15}{'peak RSS +MB':>14}",
        )
        for row in block["rows"]:
            lines.append(
                f"{row['variant']:<22}{row['step_s']:>10.4f}{row['overhead_pct']:>+13.1f}%"
                f"{row.get('overhead_fastest_pct', float('nan')):>+14.1f}%{row['peak_rss_delta_mb']:>14.1f}"
            )
    for key, title in (("edit_cost_tiny", "tiny"), ("edit_cost_full", "full SD1.5 layout")):
        block = results.get(key)
        if not block:
            continue
        section(
            f"Edit cost at the patched projections ({title}; per UNet evaluation, min of repeats)",
            f"{'variant':<22}{'unpatched ms':>14}{'edit ms, W i* each call':>25}{'edit ms, in a run':>19}"
            f"{'est. % of step':>16}",
        )
        for row in block:
            lines.append(
                f"{row['variant']:<22}{row['unpatched_min_s'] * 1e3:>14.2f}{row['edit_min_s'] * 1e3:>25.2f}"
                f"{row['edit_in_run_min_s'] * 1e3:>19.2f}{_fmt(row.get('estimated_step_overhead_pct'), 15, 3)}%"
            )
    by_prompt = results.get("scaling", {}).get("by_prompt", {})
    if by_prompt:
        section(
            "Scaling (tiny, 64 px, local lock): whole step vs unpatched (noisy) and the edit at the projections",
            f"{'prompt':<36}{'concepts':>9}{'step %':>9}{'edit %':>9}",
        )
        for prompt, rows in by_prompt.items():
            for row in sorted(rows, key=lambda r: r["concepts"])[1:]:
                lines.append(
                    f"{prompt:<36}{row['concepts']:>9}{row['overhead_pct']:>+9.1f}{_fmt(row.get('edit_pct'), 9, 2)}"
                )
    if results.get("training"):
        section(
            "Training (batch 1, grad accumulation 1, each run in its own process)",
            f"{'trainer':<34}{'model':>7}{'px':>5}{'s/step':>9}{'peak RSS MB':>13}{'train +MB':>11}",
        )
        for row in results["training"]:
            name = f"{row['trainer']} {row['dtype']} gc={'on' if row['gradient_checkpointing'] else 'off'}"
            lines.append(
                f"{name:<34}{row['layout']:>7}{row['resolution']:>5}{row['step_s']:>9.3f}"
                f"{row['peak_rss_mb']:>13.0f}{row['train_peak_delta_mb']:>11.0f}"
            )
    if results.get("concept_cost"):
        section(
            "Concept cost (file size; load + patch = node + load_models_gpu, median)",
            f"{'what':<40}{'file KB':>10}{'load+patch s':>14}",
        )
        for row in results["concept_cost"]:
            lines.append(f"{row['what']:<40}{row['file_kb']:>10.1f}{_fmt(row.get('load_patch_s'), 14, 3)}")
    return "\n".join(lines)


def write_json(results: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "bench.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path


def plot(results: dict, out_dir: Path) -> Path:
    """Left: step-time overhead vs number of concepts (per prompt length). Right: training s/step and peak."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    scaling = results.get("scaling", {})
    ax = axes[0]
    for tokens, rows in scaling.get("by_prompt", {}).items():
        rows = sorted(rows, key=lambda r: r["concepts"])
        line = ax.plot(
            [r["concepts"] for r in rows], [r["overhead_pct"] for r in rows], marker="o", label=f"{tokens}"
        )[0]
        edits = [r for r in rows if "edit_pct" in r]
        ax.plot(
            [r["concepts"] for r in edits],
            [r["edit_pct"] for r in edits],
            ls="--",
            color=line.get_color(),
            label=f"{tokens}, edit at the projections",
        )
    for key, style in (("sampling_tiny", "s"), ("sampling_full", "^")):
        block = results.get(key)
        if block:
            rows = [r for r in block["rows"] if r["lora"]]
            for r in rows:
                ax.scatter([0], [r["overhead_pct"]], marker=style, label=f"LoRA r16 ({block['model']})")
    ax.axhline(2, color="grey", ls=":", lw=1)
    ax.axhline(5, color="grey", ls="--", lw=1)
    ax.set_xlabel("concepts applied (local lock)")
    ax.set_ylabel("vs unpatched step (%): solid whole step, dashed edit cost")
    ax.set_title("Sampling overhead (tiny, 64 px)")
    ax.legend(fontsize=7)

    ax = axes[1]
    for tokens, rows in scaling.get("by_prompt", {}).items():
        rows = sorted(rows, key=lambda r: r["concepts"])
        ax.plot(
            [r["concepts"] for r in rows],
            [r["peak_rss_delta_mb"] for r in rows],
            marker="o",
            label=f"{tokens}",
        )
    ax.set_xlabel("concepts applied")
    ax.set_ylabel("peak RSS during sampling above start (MB)")
    ax.set_title("Sampling memory")
    ax.legend(fontsize=7)

    ax = axes[2]
    training = results.get("training", [])
    if training:
        labels = [
            f"{r['trainer']}\n{r['dtype']} gc={'on' if r['gradient_checkpointing'] else 'off'}\n{r['layout']} {r['resolution']}px"
            for r in training
        ]
        xs = range(len(training))
        ax.bar(
            xs,
            [r["step_s"] for r in training],
            color=["C0" if r["trainer"] == "perfusion" else "C1" for r in training],
        )
        ax.set_xticks(list(xs), labels, fontsize=6)
        ax.set_ylabel("s / optimizer step")
        ax.set_yscale("log")
        twin = ax.twinx()
        twin.plot(list(xs), [r["peak_rss_mb"] for r in training], "kD", label="peak RSS (MB)")
        twin.set_ylabel("peak RSS (MB)")
        twin.legend(fontsize=7, loc="upper left")
    ax.set_title("Training: ours (blue) vs TrainLoraNode r16 (orange)")
    fig.tight_layout()
    path = out_dir / "bench.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
