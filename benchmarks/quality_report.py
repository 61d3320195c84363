"""The quality benchmark's markdown table and its plot of fidelity against alignment (every arm, ±1 SE)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLUMNS = ("fidelity", "in_place", "alignment", "background", "positions", "other_objects")
_MARKERS = {
    "perfusion": "o",
    "unlocked": "v",
    "baselines": "s",
    "photos": "^",
    "steps": "<",
    "pairs": "D",
    "schedule": "P",
    "export": "X",
    "word": "*",
}


def _setting(row: dict) -> str:
    """E.g. "bias 0.7"; empty for an arm without a setting."""
    return "" if row["setting"] is None else f"{row['sweep']} {row['setting']:g}"


def markdown(report: dict) -> str:
    """One row per arm, each score as "rate ± SE"."""
    names = [c.replace("_", " ") for c in COLUMNS]
    lines = [
        "| part | method | setting | " + " | ".join(names) + " | n |",
        "|---|---|---|" + "---|" * len(COLUMNS) + "---|",
    ]
    for row in report["arms"]:
        cells = " | ".join(f"{row[c]:.2f} ± {row[c + '_se']:.2f}" for c in COLUMNS)
        lines.append(f"| {row['part']} | {row['method']} | {_setting(row)} | {cells} | {row['samples']} |")
    return "\n".join(lines)


def plot(report: dict, dest: Path) -> None:
    """Fidelity against alignment, one line per method through its sweep, settings labelled."""
    fig, ax = plt.subplots(figsize=(9, 6.5))
    methods: dict[str, list[dict]] = {}
    for row in report["arms"]:
        methods.setdefault(row["method"], []).append(row)
    colours = plt.get_cmap("tab20").colors
    for k, (method, rows) in enumerate(methods.items()):
        xs, ys = [r["alignment"] for r in rows], [r["fidelity"] for r in rows]
        sweep = rows[0]["sweep"]
        label = method if len(rows) == 1 or sweep in method else f"{method} ({sweep})"
        ax.errorbar(
            xs, ys, xerr=[r["alignment_se"] for r in rows], yerr=[r["fidelity_se"] for r in rows],
            fmt=_MARKERS.get(rows[0]["part"], "o") + ("-" if len(rows) > 1 else ""), capsize=2, label=label,
            color=colours[k % len(colours)],
        )  # fmt: skip
        if len(rows) > 1:
            for r in rows:
                ax.annotate(f"{r['setting']:g}", (r["alignment"], r["fidelity"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")  # fmt: skip
    ax.set_xlabel("alignment (the prompt's background, positions and other objects hold)")
    ax.set_ylabel("fidelity (the concept's colour, in its shape, appears)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title("Toy world, a mechanism test, not SD1.5: fidelity against alignment (±1 SE)", fontsize=10)
    fig.tight_layout()
    fig.savefig(dest, dpi=110)
    plt.close(fig)
