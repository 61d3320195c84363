"""Sample the toy world through ComfyUI's own graph (CheckpointLoaderSimple -> KSampler -> VAEDecode)
and score the images: the model's quality bar (background, position, and each object's colour and
shape at its place, on held-out captions; two-object captions measure binding).

    python -m toyworld.evaluate [--per-scene 3] [--pair-every 5]

Held-out captions are attribute combinations the UNet never saw (:func:`toyworld.world.is_held_out`).
Writes ``benchmarks/results/toyworld_quality.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from harness.perfusion_graphs import ConceptUse, generate_prompt
from toyworld import scorer, world

REPO = Path(__file__).resolve().parents[1]

STEPS = 20
CFG = 5.0


@dataclass(frozen=True)
class Sampling:
    """KSampler's settings for the world's samples (the benchmark and the demo use the defaults)."""

    steps: int = STEPS
    cfg: float = CFG
    sampler_name: str = "euler"
    scheduler: str = "normal"

    def __str__(self) -> str:
        return f"KSampler {self.sampler_name}/{self.scheduler}, {self.steps} steps, cfg {self.cfg}"


RESULTS = REPO / "benchmarks" / "results" / "toyworld_quality.json"


def sample(
    host,
    ckpt: str,
    text: str,
    *,
    seed: int,
    n: int,
    concepts: Sequence[ConceptUse] = (),
    sampling: Sampling = Sampling(),
) -> list[np.ndarray]:
    """``n`` images for one prompt (one KSampler batch: the host draws its noise from ``seed``)."""
    prompt = generate_prompt(
        ckpt,
        concepts,
        positive=text,
        seed=seed,
        size=world.IMAGE_SIZE,
        batch_size=n,
        filename_prefix="toyworld",
        **asdict(sampling),
    )
    result = host.run(prompt)
    if not result.success:
        raise RuntimeError(f"sampling {text!r} failed:\n{result.error_text}")
    return host.images(result, prompt.node("SaveImage").id)


def world_quality(
    host,
    ckpt: str,
    scenes: Sequence[world.Scene],
    per_scene: int,
    seed: int = 1000,
    sampling: Sampling = Sampling(),
) -> dict:
    """Attribute rates; for two-object scenes also ``swapped``: both objects drawn, each at the other's
    place. Right as often as swapped means the words are drawn but not bound to their places."""
    scores, swapped = [], 0
    for i, scene in enumerate(scenes):
        for image in sample(host, ckpt, scene.caption, seed=seed + i, n=per_scene, sampling=sampling):
            reading = scorer.read(image)
            scores.append(scorer.score_scene(reading, scene))
            if len(scene.things) == 2:
                a, b = scene.things
                swapped += scorer.thing_matches(
                    reading, replace(b, position=a.position)
                ) and scorer.thing_matches(reading, replace(a, position=b.position))
    report = {"samples": len(scores), **scorer.accuracy(scores)}
    if any(len(s.things) == 2 for s in scenes):
        report["swapped"] = swapped / len(scores)
    return report


def weights_info(weights: Path | None = None) -> dict[str, str]:
    """What a weights file (None: the committed one) says of how it was trained (steps, minutes,
    machine)."""
    from safetensors import safe_open

    from toyworld.checkpoint import WEIGHTS

    with safe_open(str(weights or WEIGHTS), "pt") as f:
        return dict(f.metadata() or {})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m toyworld.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-scene", type=int, default=3, help="samples per held-out one-object caption")
    ap.add_argument(
        "--pair-every", type=int, default=5, help="one sample of every Nth held-out two-object caption"
    )
    ap.add_argument("--steps", type=int, default=STEPS, help="sampling steps")
    ap.add_argument("--cfg", type=float, default=CFG, help="classifier-free guidance scale")
    ap.add_argument("--sampler", default=Sampling.sampler_name, help="KSampler's sampler_name")
    ap.add_argument("--scheduler", default=Sampling.scheduler, help="KSampler's scheduler")
    ap.add_argument("--no-singles", action="store_true", help="only the two-object captions")
    ap.add_argument("--weights", type=Path, help="another build's weights (default: the committed ones)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    if (a.no_singles or a.weights) and a.out == RESULTS:
        ap.error("--no-singles and --weights make another report: give --out, so the shipped results stay")
    from harness.inprocess import ComfyHost
    from toyworld.checkpoint import toyworld_checkpoint

    ckpt_path = toyworld_checkpoint(weights=a.weights)
    host = ComfyHost.get(Path(tempfile.mkdtemp(prefix="toyworld-eval-")), checkpoints=[ckpt_path])
    ckpt = ckpt_path.name
    _, held = world.world_scenes()
    singles = [s for s in held if len(s.things) == 1]
    pairs = [s for s in held if len(s.things) == 2][:: a.pair_every]
    sampling = Sampling(a.steps, a.cfg, a.sampler, a.scheduler)
    t0 = time.perf_counter()
    report = {
        "checkpoint": ckpt,
        "weights": weights_info(a.weights),
        "sampler": f"{sampling}, {world.IMAGE_SIZE} px",
    }
    if not a.no_singles:
        report["one_object"] = world_quality(host, ckpt, singles, a.per_scene, sampling=sampling)
    report["two_objects"] = world_quality(host, ckpt, pairs, 1, seed=5000, sampling=sampling)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    for name in ("one_object", "two_objects"):
        if name not in report:
            continue
        r = report[name]
        print(
            f"{name:12s} n={r['samples']:4d}  "
            + "  ".join(
                f"{k} {r[k]:.3f}"
                for k in ("background", "position", "colour", "shape", "all", "swapped")
                if k in r
            )
        )
    info = report["weights"]
    print(
        f"weights: {info.get('steps')} steps, trained in {info.get('train_minutes', '?')} min ({info.get('machine', '?')})"
    )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
