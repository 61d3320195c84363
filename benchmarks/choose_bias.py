"""`make bench-choose-bias`: does the bias chooser's rule, scored by an image embedder, land where the
same rule lands when the toy world's scorer reads every sample? A mechanism test on the toy world
(3 cross-attention layers, random CLIP), not a prediction for SD1.5 with a real CLIP vision model.

Six concepts (brown and pink, each as a ball, a block and a bar: :data:`toyworld.world.CONCEPTS`) are
trained with the toy world's recipe through ``PerfusionTrainConcept``. Each is sampled as Choose
Perfusion Bias samples it: one prompt with the concept word, the same seeds at every bias of a grid
(local key lock) and with the superclass word in its place. The grid is the toy world's bias sweep
(:data:`toyworld.recipe.BIAS_SWEEP`), not the node's default 0.4-0.9: the sweep spans a recipe
concept's gate from open to shut on this world (README, "why the bias hardly moved"), where on the
earlier recipe the node's grid gave the same images at every bias and no rule had anything to choose
between. Two curves come from the same images, and :func:`perfusion_core.operating_point.choose_bias`
picks on each:

* **proxy** (what the node does): :func:`perfusion_core.operating_point.score_curve` on the
  embeddings of :func:`toyworld.embedder.embed`, the stand-in for CLIP vision's image tower;
* **truth**: the scorer's rates: fidelity = the concept's colour in its shape anywhere; alignment =
  the prompt's background and place both hold.

Reported: per concept, both choices and whether they are within one grid step; over all (concept,
bias) points, the Spearman rank correlation of each proxy score with its scorer rate. The samples are
one KSampler batch per row (the node samples seed by seed; the curve and the rule are the same code).

    python -m benchmarks.choose_bias [--samples 12] [--concepts zorp,quib] [--steps 300] [--grid 0.4,0.9,0.1]
        [--scenes confirmation --seed 400 --out benchmarks/results/choose_bias_confirmation.json]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from benchmarks.quality import RESULTS, Plan, QualityRun, judge, open_run
from harness.perfusion_graphs import ConceptUse
from perfusion_core.operating_point import (
    BiasPoint,
    OperatingCurve,
    bias_grid,
    choose_bias,
    fidelity_share_bias,
    score_curve,
)
from toyworld import embedder, world
from toyworld.recipe import BIAS_SWEEP

SEED = 300
# Each concept's prompt: away from its training photos (white, at the centre, top and left): a place
# never trained and another background, a different pair each. "validation" is the set the node's
# rule was chosen on; "confirmation" gives every concept another place and background (run it with
# other seeds), to check that choice on prompts it was not made on.
SCENE_SETS = {
    "validation": {
        "zorp": ("right", "cyan"),
        "quib": ("bottom", "black"),
        "wubo": ("right", "gray"),
        "plorg": ("bottom", "cyan"),
        "snarb": ("right", "black"),
        "fendle": ("bottom", "gray"),
    },
    "confirmation": {
        "zorp": ("bottom", "gray"),
        "quib": ("right", "cyan"),
        "wubo": ("bottom", "black"),
        "plorg": ("right", "gray"),
        "snarb": ("bottom", "cyan"),
        "fendle": ("right", "black"),
    },
}


def symbolic_curve(grid, rows: list[list], superclass: list, scene: world.Scene, concept) -> OperatingCurve:
    """The scorer's curve: each bias's rate of fidelity and of alignment over its samples."""

    def rates(images) -> tuple[float, float]:
        judged = [judge(img, scene, [concept]) for img in images]
        return tuple(float(np.mean([j[key] for j in judged])) for key in ("fidelity", "alignment"))

    points = tuple(BiasPoint(b, *rates(r)) for b, r in zip(grid, rows))
    return OperatingCurve(points, rates(superclass)[0])


def proxy_curve(grid, rows: list[list], superclass: list, references: list) -> OperatingCurve:
    """The node's curve: cosines of :func:`toyworld.embedder.embed` embeddings."""

    def emb(images) -> torch.Tensor:
        return embedder.embed(torch.as_tensor(np.stack(images)).float())

    samples = torch.stack([emb(r) for r in rows])
    return score_curve(grid, samples, emb(superclass), emb([img / 255.0 for img in references]))


# The node's rule (the knee) and the one it replaced, both picked on the same curves.
RULES = {"knee": choose_bias, "fidelity_share": fidelity_share_bias}


def measure(
    q: QualityRun, concept: world.Concept, grid, steps: int, scenes: str = "validation", seed: int = SEED
) -> dict:
    """One concept: trained, sampled over the grid and with its superclass word; both curves."""
    position, background = SCENE_SETS[scenes][concept.word]
    scene = world.Scene(background, (concept.at(position),))
    concept_file = q.train(concept, concept.word, steps=steps)
    superclass = q.batch(scene.caption.replace(concept.word, concept.superclass), seed)
    rows = [q.batch(scene.caption, seed, [ConceptUse(concept_file, b, key_lock="local")]) for b in grid]
    truth = symbolic_curve(grid, rows, superclass, scene, concept)
    proxy = proxy_curve(grid, rows, superclass, [img for img, _ in world.concept_photos(concept)])
    return {
        "concept": asdict(concept),
        "prompt": scene.caption,
        "truth": [asdict(p) for p in truth.points],
        "truth_superclass_fidelity": truth.superclass_fidelity,
        "proxy": [asdict(p) for p in proxy.points],
        "proxy_superclass_fidelity": proxy.superclass_fidelity,
    }


def _curve(result: dict, which: str) -> OperatingCurve:
    points = tuple(BiasPoint(**p) for p in result[which])
    return OperatingCurve(points, result[f"{which}_superclass_fidelity"])


def choices(result: dict, rule: str) -> dict:
    """Each curve's choice by ``rule``, and whether they are within one grid step."""
    truth, proxy = _curve(result, "truth"), _curve(result, "proxy")
    biases = [p.bias for p in truth.points]
    step = biases[1] - biases[0] if len(biases) > 1 else 0.0
    true, chosen = RULES[rule](truth).bias, RULES[rule](proxy).bias
    return {"true_bias": true, "chosen_bias": chosen, "within_one_step": abs(chosen - true) <= step + 1e-9}


def rank_correlation(results: list[dict], score: str) -> float | None:
    """Spearman's rho of the proxy's ``score`` against the scorer's, over every (concept, bias); None
    where either side is constant (no ranking to compare)."""
    proxy = [p[score] for r in results for p in r["proxy"]]
    truth = [p[score] for r in results for p in r["truth"]]
    if len(set(proxy)) < 2 or len(set(truth)) < 2:
        return None
    return round(float(spearmanr(proxy, truth).statistic), 3)


def summarise(meta: dict, results: list[dict]) -> dict:
    """The measured curves with both rules' choices, and the rank correlations."""
    results = [{**r, **{rule: choices(r, rule) for rule in RULES}} for r in results]
    return {
        **meta,
        "concepts": results,
        "points": sum(len(r["truth"]) for r in results),
        **{
            f"within_one_step_{rule}": f"{sum(r[rule]['within_one_step'] for r in results)} of {len(results)}"
            for rule in RULES
        },
        "rho_fidelity": rank_correlation(results, "fidelity"),
        "rho_alignment": rank_correlation(results, "alignment"),
    }


def markdown(summary: dict) -> str:
    lines = [
        "| concept | prompt | rule | scorer's choice | chooser's choice | within one step |",
        "|---|---|---|---|---|---|",
    ]
    for r in summary["concepts"]:
        c = r["concept"]
        for rule in RULES:
            d = r[rule]
            lines.append(
                f"| {c['word']} ({c['colour']}, superclass {c['superclass']}) | {r['prompt']} | {rule} | {d['true_bias']:g} "
                f"| {d['chosen_bias']:g} | {'yes' if d['within_one_step'] else 'no'} |"
            )
    within = ", ".join(f"{rule} {summary[f'within_one_step_{rule}']}" for rule in RULES)
    lines.append(
        f"\nwithin one grid step: {within}; Spearman rho over {summary['points']} points: "
        f"fidelity {summary['rho_fidelity']}, alignment {summary['rho_alignment']}"
    )
    return "\n".join(lines)


def parse_grid(text: str) -> tuple[float, ...]:
    """``--grid LOW,HIGH,STEP`` as the biases it names; argparse shows the error beside the option."""
    try:
        low, high, step = (float(v) for v in text.split(","))
        return bias_grid(low, high, step)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"'{text}' is not a grid LOW,HIGH,STEP ({e})") from e


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=12, help="seeds per bias (one KSampler batch)")
    ap.add_argument("--concepts", default=",".join(world.CONCEPTS), help="comma-separated concept words")
    ap.add_argument("--scenes", choices=list(SCENE_SETS), default="validation", help="each concept's prompt")
    ap.add_argument("--seed", type=int, default=SEED, help="the first seed of each row's batch")
    ap.add_argument("--steps", type=int, default=Plan().recipe.steps, help="training steps per concept")
    ap.add_argument(
        "--grid",
        type=parse_grid,
        default=BIAS_SWEEP,
        metavar="LOW,HIGH,STEP",
        help="the bias grid (default: the toy world's sweep, 0.5-1.3 in 0.2; the node's is 0.4,0.9,0.1)",
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "choose_bias.json")
    ap.add_argument("--report", action="store_true", help="only re-score the curves already in --out")
    a = ap.parse_args(argv)
    if a.report:
        saved = json.loads(a.out.read_text())
        measured = ("concepts", "points", "rho_fidelity", "rho_alignment")
        meta = {k: v for k, v in saved.items() if k not in measured and not k.startswith("within_one_step")}
        summary = summarise(meta, saved["concepts"])
    else:
        grid = a.grid
        plan = replace(Plan(), samples=a.samples)
        q, meta = open_run(plan, seeds=f"{a.seed}.. (one batch per row)", grid=list(grid), scenes=a.scenes)
        t0 = time.perf_counter()
        words = a.concepts.split(",")
        results = [measure(q, world.CONCEPTS[w], grid, a.steps, a.scenes, a.seed) for w in words]
        meta |= {"minutes": round((time.perf_counter() - t0) / 60, 1), "train_seconds": q.train_seconds}
        summary = summarise(meta, results)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(markdown(summary) + f"\n\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
