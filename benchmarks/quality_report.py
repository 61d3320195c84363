"""The quality benchmark's table (printed) and fidelity/alignment plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

_COLUMNS = ("fidelity", "alignment", "in_place", "background", "positions", "other_blocks")


def table(report: dict) -> str:
    header = f"{'method':<24}{'setting':>8}" + "".join(f"{c:>14}" for c in _COLUMNS) + f"{'n':>6}"
    lines = [header, "-" * len(header)]
    for row in report["arms"]:
        setting = "" if row["setting"] is None else f"{row['setting']:g}"
        cells = "".join(f"{row[c]:>14.3f}" for c in _COLUMNS)
        lines.append(f"{row['method']:<24}{setting:>8}{cells}{row['samples']:>6}")
    return "\n".join(lines)


def plot(report: dict, dest: Path) -> None:
    """Fidelity against alignment, one line per method through its sweep, settings labelled."""
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    methods: dict[str, list[dict]] = {}
    for row in report["arms"]:
        if row["method"] in ("two concepts", "quib alone"):
            continue
        methods.setdefault(row["method"], []).append(row)
    for method, rows in methods.items():
        xs, ys = [r["alignment"] for r in rows], [r["fidelity"] for r in rows]
        ax.plot(xs, ys, "o-" if len(rows) > 1 else "s", label=method)
        for r in rows:
            if r["setting"] is not None and len(rows) > 1:
                ax.annotate(f"{r['setting']:g}", (r["alignment"], r["fidelity"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")  # fmt: skip
    ax.set_xlabel("alignment (prompt's background, positions, other blocks hold)")
    ax.set_ylabel("fidelity (a block of the concept's colour appears)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("Toy world (mechanism test, not SD1.5): bias / strength sweeps", fontsize=10)
    fig.tight_layout()
    fig.savefig(dest, dpi=110)
    plt.close(fig)
