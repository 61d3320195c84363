"""`make bench-quality`: does a concept show up where the prompt puts it? Measured on the toy world.

New objects the world never showed (:data:`toyworld.world.CONCEPTS`: blocks of a colour no world
scene has, superclass "block") are trained from 5 images, all of the object in the centre of a white background, through
the pack's ``PerfusionTrainConcept``; then sampled through the pack's loader (or ComfyUI's LoRA
nodes) with prompts that move them: other positions, other backgrounds, next to another block.
The scorers read every sample (:mod:`toyworld.scorer`):

* **fidelity**: a block of the concept's colour is in the image (anywhere);
* **alignment**: the prompt's background, positions and other blocks' colours all hold.

Side by side in one run, same prompts and seeds: the unpatched model prompted with the superclass
word; Perfusion over a bias sweep with local and global key-lock; Perfusion trained and used with
the key lock off (K unedited: the word's keys come from its learned embedding); the word embedding
alone (the same trainer with the gate held shut: train and inference bias 2.0, ``lr_v`` 0); ComfyUI's
``TrainLoraNode`` LoRA over a strength sweep; and two concepts trained apart in one prompt.

A mechanism test on a 3-cross-attention-layer UNet with a random CLIP: it says whether the pack's
machinery does what the paper claims, not how real SD1.5 behaves. Writes
``benchmarks/results/quality.json`` and ``quality.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.train_worker import lora_prompt  # noqa: E402
from harness.perfusion_graphs import ConceptUse, generate_prompt  # noqa: E402
from toyworld import scorer, world  # noqa: E402
from toyworld.evaluate import CFG, STEPS  # noqa: E402
from toyworld.recipe import TEMPLATE, Recipe, train_graph, write_photos  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
BIASES = (0.5, 0.6, 0.7, 0.8, 0.9)
LORA_STRENGTHS = (0.25, 0.5, 0.75, 1.0)
SHUT = 2.0  # a gate bias no token reaches: the edits are off, only the learned word acts


def eval_scenes(concept: world.Concept) -> list[world.Scene]:
    """12 prompts that move the concept away from where it was trained (centre, white)."""
    c, b = concept.at, world.block
    moved = [
        ("left", "black"), ("right", "gray"), ("top", "cyan"), ("bottom", "black"),
        ("left", "cyan"), ("right", "white"), ("top", "gray"), ("bottom", "white"),
    ]  # fmt: skip
    scenes = [world.Scene(bg, (c(pos),)) for pos, bg in moved]
    scenes += [
        world.Scene("gray", (c("left"), b("orange", "right"))),
        world.Scene("black", (b("green", "top"), c("bottom"))),
        world.Scene("cyan", (b("purple", "left"), c("right"))),
        world.Scene("white", (c("top"), b("red", "bottom"))),
    ]
    return scenes


def pair_scenes(first: world.Concept, second: world.Concept) -> list[world.Scene]:
    return [
        world.Scene(bg, (first.at(p1), second.at(p2)))
        for (p1, p2), bg in zip(world.PAIRS, ("black", "gray", "cyan", "white"))
    ]


def as_superclass(scene: world.Scene) -> world.Scene:
    """The same prompt with each concept word replaced by the superclass word."""
    concepts = {c.word for c in world.CONCEPTS.values()}
    things = tuple(replace(t, name=world.SUPERCLASS) if t.name in concepts else t for t in scene.things)
    return replace(scene, things=things)


def judge(image, scene: world.Scene, concepts: Sequence[world.Concept]) -> dict[str, bool]:
    """One sample against its prompt: fidelity per concept, alignment of everything else."""
    reading = scorer.read(image)
    words = {c.word: c for c in concepts}
    mine = [t for t in scene.things if t.name in words]
    others = [t for t in scene.things if t.name not in words]
    placed = set(reading.ranked()[: len(scene.things)]) == {t.position for t in scene.things}
    row = {
        "fidelity": all(scorer.colour_anywhere(reading, words[t.name].colour) for t in mine),
        "in_place": all(scorer.thing_matches(reading, t) for t in mine),
        "background": reading.background == scene.background,
        "positions": placed,
        "other_blocks": all(scorer.thing_matches(reading, t) for t in others),
    }
    row["alignment"] = row["background"] and row["positions"] and row["other_blocks"]
    return row


def rates(rows: list[dict[str, bool]]) -> dict[str, float]:
    return {k: round(sum(r[k] for r in rows) / len(rows), 4) for k in rows[0]} | {"samples": len(rows)}


class QualityRun:
    """One host, one checkpoint; trains the arms and samples every prompt with the same seeds."""

    def __init__(self, host, ckpt: str, recipe: Recipe, samples: int):
        self.host, self.ckpt, self.recipe, self.samples = host, ckpt, recipe, samples

    def run(self, prompt: dict, label: str):
        t0 = time.perf_counter()
        result = self.host.run(prompt)
        if not result.success:
            raise RuntimeError(f"{label} failed:\n{result.error_text}")
        print(f"  {label}: {time.perf_counter() - t0:.1f}s", flush=True)
        return result

    def photos(self, concept: world.Concept) -> list[str]:
        return write_photos(self.host.layout.input, concept, "quality")

    def train(
        self, concept: world.Concept, name: str, *, key_lock: bool = True, embedding_only: bool = False
    ):
        shut = {"train_bias": SHUT, "lr_v": 0.0} if embedding_only else {}
        graph = train_graph(
            self.ckpt, self.photos(concept), concept, self.recipe, name, key_lock=key_lock, **shut
        )
        self.run(graph, f"train {name}")
        return f"{name}.safetensors"

    def sample(self, scenes, concepts, uses=(), lora=None, superclass_prompt=False) -> list[dict[str, bool]]:
        rows = []
        for i, scene in enumerate(scenes):
            text = (as_superclass(scene) if superclass_prompt else scene).caption
            if lora is None:
                prompt = generate_prompt(
                    self.ckpt, uses, positive=text, seed=100 + i, steps=STEPS, cfg=CFG, size=world.IMAGE_SIZE,
                    batch_size=self.samples, filename_prefix="quality",
                )  # fmt: skip
            else:
                prompt = self.lora_graph(text, 100 + i, *lora)
            result = self.host.run(prompt)
            if not result.success:
                raise RuntimeError(f"sampling {text!r} failed:\n{result.error_text}")
            images = self.host.images(result, "9")
            rows += [judge(img, scene, concepts) for img in images]
        return rows

    def lora_graph(self, text: str, seed: int, names: list[str], strength: float) -> dict:
        r = self.recipe
        graph = lora_prompt(
            self.ckpt, r.steps * r.batch_size, world.IMAGE_SIZE, "fp32", False, images=names,
            text=TEMPLATE.format(world.CONCEPTS["zorp"].word), rank=r.lora_rank, learning_rate=r.lora_lr,
        )  # fmt: skip
        del graph["14"]  # SaveLoRA: the LoRA stays in the executor's cache between prompts
        gen = generate_prompt(
            self.ckpt, positive=text, seed=seed, steps=STEPS, cfg=CFG, size=world.IMAGE_SIZE,
            batch_size=self.samples, filename_prefix="quality",
        )  # fmt: skip
        gen["30"] = {
            "class_type": "LoraModelLoader",
            "inputs": {"model": ["1", 0], "lora": ["3", 1], "strength_model": strength},
        }
        gen["7"]["inputs"]["model"] = ["30", 0]
        return {**graph, **gen}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=6, help="samples per prompt (one KSampler batch)")
    ap.add_argument("--steps", type=int, default=Recipe.steps, help="training steps per concept")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--quick", action="store_true", help="2 prompts, one setting per sweep (a smoke run)")
    a = ap.parse_args(argv)
    biases, strengths, pair_biases = (0.7,), (1.0,), (0.7,)
    if not a.quick:
        biases, strengths, pair_biases = BIASES, LORA_STRENGTHS, (0.6, 0.7, 0.8)
    from harness.inprocess import ComfyHost
    from toyworld.checkpoint import toyworld_checkpoint

    os.environ.setdefault("TQDM_DISABLE", "1")  # ComfyUI's sampler bars would bury the table
    t0 = time.perf_counter()
    ckpt_path = toyworld_checkpoint()
    host = ComfyHost.get(Path(tempfile.mkdtemp(prefix="perfusion-quality-")), checkpoints=[ckpt_path])
    recipe = Recipe(steps=a.steps)
    q = QualityRun(host, ckpt_path.name, recipe, a.samples)
    zorp, quib = world.CONCEPTS["zorp"], world.CONCEPTS["quib"]
    scenes = eval_scenes(zorp)[:: 6 if a.quick else 1]

    print("training", flush=True)
    locked = q.train(zorp, "zorp_locked")
    unlocked = q.train(zorp, "zorp_unlocked", key_lock=False)
    embedding = q.train(zorp, "zorp_embedding", key_lock=False, embedding_only=True)
    second = q.train(quib, "quib_locked")
    lora_names = q.photos(zorp)

    arms: list[dict] = []

    def arm(method: str, setting: float | None, rows, **extra):
        arms.append({"method": method, "setting": setting, **rates(rows), **extra})
        last = arms[-1]
        print(
            f"  {method:<22}{'' if setting is None else setting:>6}  fidelity {last['fidelity']:.3f}  "
            f"alignment {last['alignment']:.3f}",
            flush=True,
        )

    print("sampling", flush=True)
    arm("unpatched (superclass)", None, q.sample(scenes, [zorp], superclass_prompt=True))
    for bias in biases:
        arm("perfusion local", bias, q.sample(scenes, [zorp], [ConceptUse(locked, bias, key_lock="local")]))
        arm("perfusion global", bias, q.sample(scenes, [zorp], [ConceptUse(locked, bias, key_lock="global")]))
        arm("key lock off", bias, q.sample(scenes, [zorp], [ConceptUse(unlocked, bias, key_lock="off")]))
    arm("embedding only (TI)", SHUT, q.sample(scenes, [zorp], [ConceptUse(embedding, SHUT, key_lock="off")]))
    for strength in strengths:
        arm("TrainLoraNode LoRA", strength, q.sample(scenes, [zorp], lora=(lora_names, strength)))
    pairs = pair_scenes(zorp, quib)[:: 4 if a.quick else 1]
    for bias in pair_biases:
        uses = [ConceptUse(locked, bias), ConceptUse(second, bias)]
        arm("two concepts", bias, q.sample(pairs, [zorp, quib], uses))
    solo_quib = q.sample(eval_scenes(quib)[:: 6 if a.quick else 1], [quib], [ConceptUse(second, 0.7)])
    arm("quib alone", 0.7, solo_quib)

    report = {
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, torch threads default",
        "checkpoint": ckpt_path.name,
        "recipe": recipe.__dict__,
        "sampler": f"KSampler euler/normal, {STEPS} steps, cfg {CFG}, 64 px; seeds 100+prompt index",
        "prompts": [s.caption for s in scenes],
        "pair_prompts": [s.caption for s in pairs],
        "arms": arms,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "quality.json").write_text(json.dumps(report, indent=2) + "\n")
    from benchmarks.quality_report import plot, table

    print(table(report))
    plot(report, a.out / "quality.png")
    print(f"wrote {a.out / 'quality.json'} and quality.png in {report['seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
