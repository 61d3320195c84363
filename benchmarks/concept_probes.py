"""Quick looks at one toy-world concept (48 samples per arm, about 5-10 minutes each on 2 cores):
the probes behind README "The toy world", "Concepts on this world". ``make bench-quality`` is the
measurement; these answer one question each, fast.

    python -m benchmarks.concept_probes one-place|three-places|bias|recipe|gates|neighbours|closed [--steps N]

README's one-place, three-places and bias figures were measured at 150 steps (``--steps 150``),
before the recipe moved to 300.

- ``one-place``: trained from photos at the centre only; where is the concept drawn?
- ``three-places``: the recipe (photos at three places); where is it drawn, local and global lock?
- ``bias``: the recipe's concept across the bias, local and global lock.
- ``recipe``: 300 steps against 150 steps with lr_v 0.2.
- ``gates``: the recipe's concept; r(e) = eᵀu / i*ᵀu (what the gate compares with the bias) of its
  word, of its superclass word and, at most, of any other token, with the concept at each place.
- ``neighbours``: zorp and quib (the recipe, as part ``pairs``) at the left beside each other noun
  of the world at the right, gray background, global lock, against the same prompt with the
  superclass word: which neighbours take the concept's place (README "Quality", "Where two concepts
  fail").
- ``closed``: the recipe's concept as its gate closes (bias 0.9, 1.1, 2.0), local and global lock:
  what is drawn at the concept's place, its superclass's look or another.
"""

from __future__ import annotations

import argparse
import collections
import math
from dataclasses import replace

from benchmarks.quality import Plan, QualityRun, eval_scenes, judge, open_run, rates
from harness.graph import Graph
from harness.perfusion_graphs import ConceptUse, add_concepts
from toyworld import scorer, world
from toyworld.recipe import SUGGESTED_BIAS, Recipe, train_graph, write_photos

# The one-place probe compares the key locks at this bias: a probe setting (its results are labelled
# with it), equal to the node's default bias but not read from it.
LOCK_PROBE_BIAS = 0.7
NEIGHBOUR_SEED = 108  # the benchmark's seed for its "left X, right cheese, gray" prompt
SHOWN = ("fidelity", "in_place", "alignment", "background", "positions")
ZORP = world.CONCEPTS["zorp"]


def train(
    q: QualityRun, name: str, recipe: Recipe, folder: str, concept: world.Concept = ZORP, **options
) -> str:
    """The concept file trained from ``folder`` (photos and captions in ComfyUI's input folder)."""
    q.timed(train_graph(q.ckpt, folder, concept, recipe, name, **options), f"train {name}")
    return f"{name}.safetensors"


def arm(q: QualityRun, label: str, uses: list[ConceptUse]) -> None:
    """Every prompt sampled with ``uses``: the rates, where the concept landed per prompted place, and
    the looks drawn at the prompted place."""
    where: collections.Counter = collections.Counter()
    looks: collections.Counter = collections.Counter()
    rows = []
    for i, scene in enumerate(eval_scenes(ZORP)):
        wanted = next(t.position for t in scene.things if t.name == ZORP.word)
        for image in q.batch(scene.caption, 100 + i, uses):
            reading = scorer.read(image)
            where[f"{wanted}->{scorer.colour_anywhere(reading, ZORP.colour)}"] += 1
            seen = reading.objects.get(wanted)
            looks[f"{seen.colour} {seen.shape}" if seen else "nothing"] += 1
            rows.append(judge(image, scene, [ZORP]))
    r = rates(rows)
    print(f"{label:<28}", " ".join(f"{k} {r[k]:.2f}" for k in SHOWN), dict(sorted(where.items())), flush=True)
    print(f"{'':<28} at its place: {dict(looks.most_common())}", flush=True)


def relevance(q: QualityRun, concept: str) -> None:
    """Each token's r(e), read back from the gate map node's table at bias 0 and temperature 1 (where
    the gate is sigmoid(r)), for the concept's word and its superclass word at every place."""
    for place in world.POSITIONS:
        for word in (ZORP.word, ZORP.superclass):
            text = world.Scene("white", (ZORP.at(place),)).caption.replace(ZORP.word, word)
            prompt = Graph()
            ckpt = prompt.checkpoint(q.ckpt)
            use = ConceptUse(concept, 0.0, temperature=1.0)
            model, clip = add_concepts(prompt, ckpt[0], ckpt[1], [use])  # checkpoint -> loader
            gate_map = prompt.add("PerfusionGateMap", model=model, clip=clip, text=text)
            (table,) = q.run(prompt, f"gate map {text!r}").outputs[gate_map.id]["text"]
            r = collections.defaultdict(list)
            for token, gate in (line.split("\t") for line in table.splitlines()[1:]):
                g = min(max(float(gate), 1e-7), 1 - 1e-7)
                r[token].append(math.log(g / (1 - g)))
            rest = max(v for token, values in r.items() if token != word for v in values)
            print(
                f"{word:>8} at {place:<6}  r {r[word][0]:.3f}  (any other token at most {rest:.3f})",
                flush=True,
            )


def neighbours(q: QualityRun, recipe: Recipe) -> None:
    """Each concept at the left beside every other world noun at the right (one batch each, the same
    seed), and its superclass word there: how many samples draw the left object right."""
    for concept in (ZORP, world.CONCEPTS["quib"]):
        folder = write_photos(q.host.layout.input, concept, "probe", recipe.shots)
        trained = train(q, f"probe_{concept.word}", recipe, folder, concept)
        superclass = world.thing(*world.NOUNS[concept.superclass], "left")
        counts = {}
        for noun, look in world.NOUNS.items():
            if noun == concept.superclass:
                continue
            right = world.Thing(noun, *look, "right")
            for left, uses in (
                (concept.at("left"), [ConceptUse(trained, SUGGESTED_BIAS, key_lock="global")]),
                (superclass, []),
            ):
                images = q.batch(world.Scene("gray", (left, right)).caption, NEIGHBOUR_SEED, uses)
                counts[noun, left.name] = sum(scorer.thing_matches(scorer.read(i), left) for i in images)
        for name in (concept.word, concept.superclass):
            row = {noun: n for (noun, who), n in counts.items() if who == name}
            print(
                f"{name:>8} at left: {sum(row.values())} of {len(row) * q.samples} right  {row}", flush=True
            )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "probe", choices=("one-place", "three-places", "bias", "recipe", "gates", "neighbours", "closed")
    )
    ap.add_argument("--steps", type=int, help="training steps (default: the recipe's)")
    a = ap.parse_args(argv)
    q, _ = open_run(Plan(samples=6 if a.probe == "neighbours" else 4))
    recipe = replace(Recipe(), steps=a.steps or Recipe().steps)
    if a.probe == "one-place":
        folder = write_photos(q.host.layout.input, ZORP, "probe_centre", recipe.shots, places=("centre",) * 6)
        locked = train(q, "probe_centre", recipe, folder)
        unlocked = train(q, "probe_centre_unlocked", recipe, folder, key_lock=False)
        b = LOCK_PROBE_BIAS
        arm(q, f"local {b}", [ConceptUse(locked, b)])
        arm(q, f"global {b}", [ConceptUse(locked, b, key_lock="global")])
        arm(q, f"key lock off {b}", [ConceptUse(unlocked, b, key_lock="off")])
        arm(q, "edits shut (word only)", [ConceptUse(locked, 2.0)])
        return 0
    if a.probe == "neighbours":
        neighbours(q, recipe)
        return 0
    folder = write_photos(q.host.layout.input, ZORP, "probe", recipe.shots)
    if a.probe == "recipe":
        for label, r in (
            ("300 steps", recipe),
            ("150 steps, lr_v 0.2", replace(recipe, steps=150, lr_v=0.2)),
        ):
            concept = train(
                q, "probe_" + label.replace(" ", "_").replace(",", "").replace(".", ""), r, folder
            )
            for b in (0.5, 0.7):
                arm(q, f"{label}, bias {b}", [ConceptUse(concept, b)])
        return 0
    concept = train(q, "probe_recipe", recipe, folder)
    if a.probe == "gates":
        relevance(q, concept)
        return 0
    biases = {"three-places": (0.7,), "closed": (0.9, 1.1, 2.0)}.get(a.probe, (0.4, 0.5, 0.6, 0.7))
    for lock in ("local", "global"):
        for b in biases:
            arm(q, f"{lock} {b}", [ConceptUse(concept, b, key_lock=lock)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
