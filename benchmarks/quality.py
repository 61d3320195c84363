"""`make bench-quality`: does a concept show up where the prompt puts it, and what does each part of
Perfusion buy? Measured on the toy world: a mechanism test on a 3-cross-attention-layer UNet with a
random, mostly frozen CLIP, which says whether the pack's machinery does what the paper claims, not
how SD1.5 behaves.

New objects the world never showed (:data:`toyworld.world.CONCEPTS`: zorp a brown ball, quib a pink
block, wubo a pink ball) are trained from 5 captioned photos at three places (centre, top, left; white
background) through the pack's ``PerfusionTrainConcept`` (:mod:`toyworld.recipe`), then sampled
through the pack's loader (or ComfyUI's LoRA nodes) with 12 prompts that move them: 8 to another
place and background, 4 next to another object. Every prompt is one KSampler batch of 9 (seed 100 + prompt index, the same for every
arm): 108 samples per arm. The scorers read each sample (:mod:`toyworld.scorer`):

* **fidelity**: the concept's colour is in the image, in the concept's shape (anywhere);
* **in_place**: the concept, colour and shape, at its prompted place (for a pair: both);
* **alignment**: the prompt's background, positions and other objects (colour and shape) all hold.

Each rate comes with its binomial standard error sqrt(p(1-p)/n).

Parts (``--part NAME``, repeatable, default all; each writes ``results/quality/<part>.json``, and every
run ends by merging the part files there into ``results/quality.json``, ``quality.png`` and a markdown
table, which ``--report`` alone redoes; parts measured on other weights are refused). ``--weights W --out
DIR`` measures another build's world (``toyworld.build --out W``) the same way. Minutes on this
2-core VM with one torch thread beside another part (measured: 470 s per 300-step training, 0.95 s
per sampled image, so 1.7 minutes per arm of 108 samples):

  perfusion  the unpatched model with the superclass word; Perfusion with the local    ~27
             and with the global key lock, bias 0.5-1.3 (``BIAS_SWEEP``)
  unlocked   trained and used with the key lock off, the same biases                  ~17
  baselines  the word embedding alone (textual inversion); ComfyUI's TrainLoraNode    ~28
             LoRA at strengths 0.25-2
  photos     1 photo against 5; weight decay 0.01 against 0                           ~29
  steps      100, 300 (the recipe) and 500 training steps                              ~29
  pairs      zorp + quib (two superclasses) and zorp + wubo (one), trained apart,       30
             chained, local and global key lock
  schedule   a linear bias schedule, 0.2 above a constant bias's value at the first   ~17
             step to 0.2 below it at the last, local key lock
  export     Export Perfusion Concept's LoRA + embedding (strength 0.5, 1) against     ~14
             the gated file at the suggested bias
  word       the learned word alone: a concept file at the suggested bias and with    ~24
             its edits shut, trained at lr_embedding 0.001 (the recipe) and 0.01

So on 2 cores it runs as named parts of <= 30 minutes each, two at a time, one command per part
(``make bench-quality BENCH_ARGS="--part perfusion"``, ...): about 2 hours in all; the whole in one
command is for a machine with a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from benchmarks.train_worker import lora_prompt
from harness.graph import Graph
from harness.perfusion_graphs import ConceptUse, generate_prompt, with_model_patch
from toyworld import scorer, world
from toyworld.evaluate import Sampling
from toyworld.recipe import BIAS_SWEEP, SUGGESTED_BIAS, Recipe, train_graph, write_photos

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "benchmarks" / "results"
SHUT = 2.0  # a gate bias no token reaches: the edits are off, only the learned word acts
SCHEDULE_SPAN = 0.2  # a schedule's bias starts this far above its centre and ends this far below
# Textual inversion's word learns at a rate of its own: the recipe's 0.001 suits a word the V edits
# carry, but barely moves a word that has to carry the concept alone.
TI_LR_EMBEDDING = 0.01


@dataclass(frozen=True)
class Plan:
    """How much each part measures: the full run, or a smoke run (``--quick``)."""

    every: int = 1  # every Nth prompt
    samples: int = 9  # per prompt (one KSampler batch)
    biases: tuple[float, ...] = BIAS_SWEEP
    strengths: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
    steps: tuple[int, ...] = (100, 300, 500)  # the recipe's 300 among them
    embedding_lrs: tuple[float, ...] = (0.001, 0.01)  # the recipe's 0.001 among them
    recipe: Recipe = field(default_factory=Recipe)


QUICK = Plan(
    every=8,
    samples=2,
    biases=(0.7,),
    strengths=(1.0,),
    steps=(4, 8),
    embedding_lrs=(0.001,),
    recipe=Recipe(steps=8),
)


def eval_scenes(concept: world.Concept) -> list[world.Scene]:
    """12 prompts that move the concept away from where it was trained (centre, white)."""
    c, t = concept.at, world.thing
    moved = [
        ("left", "black"), ("right", "gray"), ("top", "cyan"), ("bottom", "black"),
        ("left", "cyan"), ("right", "white"), ("top", "gray"), ("bottom", "white"),
    ]  # fmt: skip
    scenes = [world.Scene(bg, (c(pos),)) for pos, bg in moved]
    scenes += [
        world.Scene("gray", (c("left"), t("yellow", "block", "right"))),
        world.Scene("black", (t("green", "bar", "top"), c("bottom"))),
        world.Scene("cyan", (t("blue", "ball", "left"), c("right"))),
        world.Scene("white", (c("top"), t("red", "bar", "bottom"))),
    ]
    return scenes


def pair_scenes(first: world.Concept, second: world.Concept) -> list[world.Scene]:
    """12 prompts with both concepts: four pairs of places on three backgrounds, each concept in the
    earlier slot of the caption in half of them."""
    places = (("left", "right"), ("top", "bottom"), ("centre", "right"), ("left", "bottom"))
    scenes = []
    for k, (bg, (p1, p2)) in enumerate((bg, p) for bg in ("black", "gray", "cyan") for p in places):
        a, b = (first, second) if k % 2 == 0 else (second, first)
        scenes.append(world.Scene(bg, (a.at(p1), b.at(p2))))
    return scenes


def as_superclass(scene: world.Scene) -> world.Scene:
    """The same prompt with each concept word replaced by its superclass word."""
    concepts = {c.word: c for c in world.CONCEPTS.values()}
    things = tuple(
        replace(t, name=concepts[t.name].superclass) if t.name in concepts else t for t in scene.things
    )
    return replace(scene, things=things)


def judge(image, scene: world.Scene, concepts: Sequence[world.Concept]) -> dict[str, bool]:
    """One sample against its prompt: the concepts' fidelity and places, the rest's alignment."""
    reading = scorer.read(image)
    words = {c.word: c for c in concepts}
    mine = [t for t in scene.things if t.name in words]
    others = [t for t in scene.things if t.name not in words]

    def seen(concept: world.Concept) -> bool:
        place = scorer.colour_anywhere(reading, concept.colour)
        return place is not None and reading.objects[place].shape == concept.shape

    base = scorer.score_scene(reading, scene)
    row = {
        "fidelity": all(seen(words[t.name]) for t in mine),
        "in_place": all(scorer.thing_matches(reading, t) for t in mine),
        "background": base["background"],
        "positions": base["position"],
        "other_objects": all(scorer.thing_matches(reading, t) for t in others),
    }
    row["alignment"] = row["background"] and row["positions"] and row["other_objects"]
    return row


def rates(rows: list[dict[str, bool]]) -> dict[str, float]:
    """Each score's rate and its binomial standard error (``<score>_se``), and the sample count."""
    n = len(rows)
    out: dict[str, float] = {}
    for key in rows[0]:
        p = sum(r[key] for r in rows) / n
        out[key], out[f"{key}_se"] = round(p, 4), round((p * (1 - p) / n) ** 0.5, 4)
    return out | {"samples": n}


class QualityRun:
    """One host, one checkpoint: trains concepts (each set of options once) and samples every prompt
    with the same seeds; keeps the seconds it spends, per training and per sampled image."""

    def __init__(self, host, ckpt: str, recipe: Recipe, samples: int):
        self.host, self.ckpt, self.recipe, self.samples = host, ckpt, recipe, samples
        self.trained: dict[tuple, str] = {}
        self.train_seconds: dict[str, float] = {}
        self.sample_seconds, self.images = 0.0, 0

    def run(self, prompt: dict, label: str):
        result = self.host.run(prompt)
        if not result.success:
            raise RuntimeError(f"{label} failed:\n{result.error_text}")
        return result

    def train(
        self,
        concept: world.Concept,
        name: str,
        *,
        key_lock: bool = True,
        embedding_only: bool = False,
        shots: int | None = None,
        steps: int | None = None,
        weight_decay: float = 0.0,
        lr_embedding: float | None = None,
    ) -> str:
        """The concept file (``name``, unless these options were trained before)."""
        recipe = replace(
            self.recipe,
            steps=steps or self.recipe.steps,
            shots=shots or self.recipe.shots,
            lr_embedding=self.recipe.lr_embedding if lr_embedding is None else lr_embedding,
        )
        key = (
            concept.word,
            key_lock,
            embedding_only,
            recipe.shots,
            recipe.steps,
            weight_decay,
            recipe.lr_embedding,
        )
        if key not in self.trained:
            folder = write_photos(self.host.layout.input, concept, "quality", recipe.shots)
            options = {"train_bias": SHUT, "lr_v": 0.0} if embedding_only else {}
            if weight_decay:
                options["weight_decay"] = weight_decay
            graph = train_graph(self.ckpt, folder, concept, recipe, name, key_lock=key_lock, **options)
            self.timed(graph, f"train {name}")
            self.trained[key] = f"{name}.safetensors"
        return self.trained[key]

    def train_lora(self, concept: world.Concept, name: str) -> str:
        """ComfyUI's TrainLoraNode on the same photos and captions (one conditioning per image, from
        the same dataset loader), as many image-steps at batch 1; the LoRA file's name in
        models/loras."""
        r = self.recipe
        graph = lora_prompt(
            self.ckpt, r.steps * r.batch_size, world.IMAGE_SIZE, "fp32", False, images=[],
            rank=r.lora_rank, learning_rate=r.lora_lr, trainer=self.host.node_class("TrainLoraNode"),
        )  # fmt: skip
        folder = write_photos(self.host.layout.input, concept, "quality", r.shots)
        dataset = graph.add("LoadImageTextDataSetFromFolder", folder=folder)
        graph.inputs("ImageScale")["image"] = dataset[0]
        graph.inputs("CLIPTextEncode")["text"] = dataset[1]
        graph.inputs("SaveLoRA")["prefix"] = f"loras/{name}"
        self.timed(graph, f"train {name}")
        saved = max((self.host.layout.output / "loras").glob(f"{name}_*.safetensors"), key=os.path.getmtime)
        return self.host.add_file("loras", saved, f"{name}.safetensors")

    def timed(self, prompt: dict, label: str) -> None:
        t0 = time.perf_counter()
        self.run(prompt, label)
        self.train_seconds[label] = round(time.perf_counter() - t0, 1)
        print(f"  {label}: {self.train_seconds[label]:.0f}s", flush=True)

    def sample(
        self,
        scenes: Sequence[world.Scene],
        concepts: Sequence[world.Concept],
        uses: Sequence[ConceptUse] = (),
        lora: tuple[str, float] | None = None,
        superclass_prompt: bool = False,
        words: dict[str, str] | None = None,
    ) -> list[dict[str, bool]]:
        """Every scene's batch (seed 100 + its index), judged; ``lora``: (file, strength); ``words``:
        what to write in the prompt for a concept word (e.g. an ``embedding:`` name)."""
        rows = []
        for i, scene in enumerate(scenes):
            text = (as_superclass(scene) if superclass_prompt else scene).caption
            for word, written in (words or {}).items():
                text = text.replace(word, written)
            rows += [judge(img, scene, concepts) for img in self.batch(text, 100 + i, uses, lora)]
        return rows

    def batch(
        self, text: str, seed: int, uses: Sequence[ConceptUse] = (), lora: tuple[str, float] | None = None
    ) -> list:
        """One KSampler batch of ``text`` from ``seed`` (the same seeds for every arm), timed."""
        t0 = time.perf_counter()
        prompt = generate_prompt(
            self.ckpt, uses, positive=text, seed=seed, size=world.IMAGE_SIZE, batch_size=self.samples,
            filename_prefix="quality", **asdict(Sampling()),
        )  # fmt: skip
        if lora is not None:
            inputs = {"lora_name": lora[0], "strength_model": lora[1]}
            prompt = with_model_patch(prompt, "LoraLoaderModelOnly", inputs)
        images = self.host.images(self.run(prompt, f"sampling {text!r}"), prompt.node("SaveImage").id)
        self.sample_seconds += time.perf_counter() - t0
        self.images += len(images)
        return images

    def arm(self, method: str, sweep: str, setting: float | None, *args, **kwargs) -> dict:
        """One arm (``sweep``: what ``setting`` is, e.g. "bias"): :meth:`sample`'s rows as rates,
        printed as they come."""
        row = {"method": method, "sweep": sweep, "setting": setting, **rates(self.sample(*args, **kwargs))}
        shown = "" if setting is None else f"{sweep} {setting:g}"
        scores = "  ".join(
            f"{k} {row[k]:.2f}±{row[k + '_se']:.2f}" for k in ("fidelity", "in_place", "alignment")
        )
        print(f"  {method:<24}{shown:>14}  {scores}  n={row['samples']}", flush=True)
        return row


def part_perfusion(q: QualityRun, plan: Plan) -> list[dict]:
    """The unpatched model prompted with the superclass word; Perfusion's local and global key lock."""
    zorp = world.CONCEPTS["zorp"]
    scenes = eval_scenes(zorp)[:: plan.every]
    concept = q.train(zorp, "zorp")
    arms = [q.arm("unpatched (superclass)", "", None, scenes, [zorp], superclass_prompt=True)]
    for lock in ("local", "global"):
        for b in plan.biases:
            arms.append(
                q.arm(f"perfusion {lock}", "bias", b, scenes, [zorp], [ConceptUse(concept, b, key_lock=lock)])
            )
    return arms


def part_unlocked(q: QualityRun, plan: Plan) -> list[dict]:
    """Trained and used with the key lock off: K unedited, the word's keys come from its embedding."""
    zorp = world.CONCEPTS["zorp"]
    scenes = eval_scenes(zorp)[:: plan.every]
    concept = q.train(zorp, "zorp_unlocked", key_lock=False)
    uses = {b: [ConceptUse(concept, b, key_lock="off")] for b in plan.biases}
    return [q.arm("key lock off", "bias", b, scenes, [zorp], uses[b]) for b in plan.biases]


def part_baselines(q: QualityRun, plan: Plan) -> list[dict]:
    """The word embedding alone (textual inversion: the same trainer, the gate held shut, the word at
    :data:`TI_LR_EMBEDDING`), and ComfyUI's TrainLoraNode LoRA over strengths wide enough to meet
    Perfusion's fidelity."""
    zorp = world.CONCEPTS["zorp"]
    scenes = eval_scenes(zorp)[:: plan.every]
    embedding = q.train(
        zorp, "zorp_embedding", key_lock=False, embedding_only=True, lr_embedding=TI_LR_EMBEDDING
    )
    shut = [ConceptUse(embedding, SHUT, key_lock="off")]
    arms = [q.arm("embedding only (TI)", "", None, scenes, [zorp], shut)]
    lora = q.train_lora(zorp, "zorp_lora")
    arms += [
        q.arm("TrainLoraNode LoRA", "strength", s, scenes, [zorp], lora=(lora, s)) for s in plan.strengths
    ]
    return arms


def part_photos(q: QualityRun, plan: Plan) -> list[dict]:
    """At the suggested bias, local key lock: 1 photo against 5, and AdamW weight decay 0.01 against
    the trainer's 0."""
    zorp = world.CONCEPTS["zorp"]
    scenes = eval_scenes(zorp)[:: plan.every]
    arms = []
    for shots in (1, 5):
        concept = q.train(zorp, f"zorp_{shots}_photos", shots=shots)
        arms.append(q.arm("photos", "photos", shots, scenes, [zorp], [ConceptUse(concept, SUGGESTED_BIAS)]))
    decayed = q.train(zorp, "zorp_decay", weight_decay=0.01)
    use = [ConceptUse(decayed, SUGGESTED_BIAS)]
    arms.append(q.arm("weight decay", "weight decay", 0.01, scenes, [zorp], use))
    return arms


def part_steps(q: QualityRun, plan: Plan) -> list[dict]:
    """At the suggested bias, local key lock: the training-step sweep (the recipe's steps among it)."""
    zorp = world.CONCEPTS["zorp"]
    scenes = eval_scenes(zorp)[:: plan.every]
    arms = []
    for steps in plan.steps:
        concept = q.train(zorp, f"zorp_{steps}_steps", steps=steps)
        use = [ConceptUse(concept, SUGGESTED_BIAS)]
        arms.append(q.arm("training steps", "steps", steps, scenes, [zorp], use))
    return arms


def chained_pairs(q: QualityRun, plan: Plan, locks: dict[str, Sequence[str]]) -> list[dict]:
    """zorp chained with each concept of ``locks`` under each of its key locks, all trained apart with
    the recipe, at the suggested bias; in_place is "both present, on their places"."""
    zorp = world.CONCEPTS["zorp"]
    files = {zorp.word: q.train(zorp, zorp.word)}
    arms = []
    for word, lock_list in locks.items():
        other = world.CONCEPTS[word]
        files[word] = q.train(other, word)
        scenes = pair_scenes(zorp, other)[:: plan.every]
        for lock in lock_list:
            uses = [ConceptUse(files[c.word], SUGGESTED_BIAS, key_lock=lock) for c in (zorp, other)]
            arms.append(
                q.arm(f"{zorp.word} + {word} {lock}", "bias", SUGGESTED_BIAS, scenes, [zorp, other], uses)
            )
    return arms


def part_pairs(q: QualityRun, plan: Plan) -> list[dict]:
    """Two concepts trained apart with the recipe, chained. zorp + quib: two superclasses (ball,
    block); zorp + wubo: one (ball)."""
    both = ("local", "global")
    return chained_pairs(q, plan, {"quib": both, "wubo": both})


def part_export(q: QualityRun, plan: Plan) -> list[dict]:
    """The concept exported for stock ComfyUI (Export Perfusion Concept: an ungated rank-1 LoRA through
    LoraLoaderModelOnly plus the word as ``embedding:<name>``) against the gated original through the
    pack's loader, same prompts and seeds; the files' sizes go in the method names."""
    zorp = world.CONCEPTS["zorp"]
    scenes = eval_scenes(zorp)[:: plan.every]
    concept = q.train(zorp, "zorp")
    name = "zorp_exported"
    graph = Graph()
    ckpt = graph.checkpoint(q.ckpt)
    concept_file = graph.add("PerfusionConceptFile", concept_name=concept)
    graph.add("PerfusionExportConcept", model=ckpt[0], concept=concept_file, name=name, overwrite=True)
    q.run(graph, "export")
    sizes = {
        folder: (q.host.folder(folder)[0] / f"{name}.safetensors").stat().st_size // 1024
        for folder in ("loras", "embeddings")
    }
    sizes["perfusion"] = (q.host.folder("perfusion")[0] / concept).stat().st_size // 1024
    gated = f"gated concept file ({sizes['perfusion']} KB)"
    arms = [q.arm(gated, "bias", SUGGESTED_BIAS, scenes, [zorp], [ConceptUse(concept, SUGGESTED_BIAS)])]
    exported = f"exported LoRA + embedding ({sizes['loras']} + {sizes['embeddings']} KB)"
    words = {zorp.word: f"embedding:{name}"}
    for strength in (0.5, 1.0):
        lora = (f"{name}.safetensors", strength)
        arms.append(q.arm(exported, "strength", strength, scenes, [zorp], lora=lora, words=words))
    return arms


def part_schedule(q: QualityRun, plan: Plan) -> list[dict]:
    """A linear bias schedule around each constant bias of ``perfusion`` (local key lock): higher at
    the first step (the superclass's layout), lower at the last (the identity). Its setting is the
    schedule's centre, so its curve sits beside the constant one on the plot."""
    zorp = world.CONCEPTS["zorp"]
    scenes = eval_scenes(zorp)[:: plan.every]
    concept = q.train(zorp, "zorp")
    arms = []
    for b in plan.biases:
        use = [ConceptUse(concept, round(b + SCHEDULE_SPAN, 3), bias_end=round(b - SCHEDULE_SPAN, 3))]
        arms.append(q.arm(f"bias schedule ±{SCHEDULE_SPAN:g} local", "bias", b, scenes, [zorp], use))
    return arms


def part_word(q: QualityRun, plan: Plan) -> list[dict]:
    """How much of the concept the learned word carries on its own: each concept file at the suggested
    bias and with its edits shut (bias 2.0: only the word's embedding acts), trained at the recipe's
    embedding learning rate and at a higher one."""
    zorp = world.CONCEPTS["zorp"]
    scenes = eval_scenes(zorp)[:: plan.every]
    arms = []
    for lr in plan.embedding_lrs:
        concept = q.train(zorp, f"zorp_lr_embedding_{lr:g}", lr_embedding=lr)
        for bias in (SUGGESTED_BIAS, SHUT):
            use = [ConceptUse(concept, bias)]
            arms.append(q.arm(f"lr_embedding {lr:g}", "bias", bias, scenes, [zorp], use))
    return arms


PARTS: dict[str, Callable[[QualityRun, Plan], list[dict]]] = {
    "perfusion": part_perfusion,
    "unlocked": part_unlocked,
    "baselines": part_baselines,
    "photos": part_photos,
    "steps": part_steps,
    "pairs": part_pairs,
    "schedule": part_schedule,
    "export": part_export,
    "word": part_word,
}


def run_part(name: str, q: QualityRun, plan: Plan, meta: dict, out: Path) -> None:
    """One part, timed, into ``out/quality/<name>.json``."""
    print(f"part {name}", flush=True)
    q.train_seconds, q.sample_seconds, q.images = {}, 0.0, 0
    t0, cpu0 = time.perf_counter(), time.process_time()
    arms = PARTS[name](q, plan)
    seconds = time.perf_counter() - t0
    result = {
        "part": name,
        **meta,
        "arms": [{"part": name, **a} for a in arms],
        "seconds": round(seconds, 1),
        "cpu_seconds": round(time.process_time() - cpu0, 1),
        "train_seconds": q.train_seconds,
        "sample_seconds_per_image": round(q.sample_seconds / max(q.images, 1), 3),
    }
    (out / "quality").mkdir(parents=True, exist_ok=True)
    (out / "quality" / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"part {name}: {seconds / 60:.1f} min ({q.images} images at {result['sample_seconds_per_image']:.2f}s, "
        f"training {sum(q.train_seconds.values()):.0f}s)",
        flush=True,
    )


def report(out: Path) -> str:
    """Merges the part files in ``out/quality/`` into quality.json and quality.png; the markdown table."""
    from benchmarks.quality_report import markdown, plot

    found = {
        n: json.loads((out / "quality" / f"{n}.json").read_text())
        for n in PARTS
        if (out / "quality" / f"{n}.json").is_file()
    }
    if not found:
        raise SystemExit(f"no part results in {out / 'quality'}: run a part first")
    checkpoints = {p["checkpoint"] for p in found.values()}
    if len(checkpoints) > 1:
        by = {n: p["checkpoint"] for n, p in found.items()}
        raise SystemExit(f"parts measured on different weights ({by}): rerun the stale ones")
    merged = {
        "checkpoint": checkpoints.pop(),
        "parts": {n: {k: v for k, v in p.items() if k not in ("arms", "part")} for n, p in found.items()},
        "missing_parts": [n for n in PARTS if n not in found],
        "arms": [a for p in found.values() for a in p["arms"]],
    }
    (out / "quality.json").write_text(json.dumps(merged, indent=2) + "\n")
    plot(merged, out / "quality.png")
    missing = f" (missing parts: {', '.join(merged['missing_parts'])})" if merged["missing_parts"] else ""
    return markdown(merged) + f"\n\nwrote {out / 'quality.json'} and quality.png{missing}"


def open_run(plan: Plan, weights: Path | None = None, **meta) -> tuple[QualityRun, dict]:
    """An in-process ComfyUI on the toy-world checkpoint (``weights``: another build's, None for the
    committed one), and what every result file records."""
    from harness.inprocess import ComfyHost
    from toyworld.checkpoint import toyworld_checkpoint
    from toyworld.evaluate import weights_info

    os.environ.setdefault("TQDM_DISABLE", "1")  # ComfyUI's sampler bars would bury the table
    ckpt_path = toyworld_checkpoint(weights=weights)
    host = ComfyHost.get(Path(tempfile.mkdtemp(prefix="perfusion-quality-")), checkpoints=[ckpt_path])
    import torch

    meta = {
        "checkpoint": ckpt_path.name,
        "weights": weights_info(weights),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads",
        **meta,
        "recipe": plan.recipe.__dict__,
        "sampler": f"{Sampling()}, {world.IMAGE_SIZE} px; {plan.samples} per prompt",
    }
    return QualityRun(host, ckpt_path.name, plan.recipe, plan.samples), meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__[__doc__.index("Parts (") :],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--part", action="append", choices=list(PARTS), help="run this part (repeatable; default all)"
    )
    ap.add_argument("--report", action="store_true", help="only merge the part files and print the table")
    ap.add_argument(
        "--quick", action="store_true", help="a smoke run: 2 prompts, one setting per sweep, 8 steps"
    )
    ap.add_argument("--samples", type=int, help="samples per prompt (one KSampler batch; default 9, quick 2)")
    ap.add_argument(
        "--out", type=Path, help="results folder (default benchmarks/results; quick: a temp folder)"
    )
    ap.add_argument("--weights", type=Path, help="another build's world (default: the committed one)")
    a = ap.parse_args(argv)
    plan = QUICK if a.quick else Plan()
    plan = replace(plan, samples=a.samples or plan.samples)
    out = a.out or (Path(tempfile.gettempdir()) / "perfusion-quality-quick" if a.quick else RESULTS)
    if a.weights and out == RESULTS:
        ap.error("--weights measures another world: give --out, so the shipped results stay")
    if a.report:
        print(report(out))
        return 0
    q, meta = open_run(plan, a.weights, quick=a.quick, seeds="100 + prompt index")
    for name in a.part or PARTS:
        run_part(name, q, plan, meta, out)
    print(report(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
