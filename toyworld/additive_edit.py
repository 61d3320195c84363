"""`python -m toyworld.additive_edit`: can an edit that adds one vector to a noun's value input (the
form of Perfusion's V edit) recolour that noun alone, and two nouns at once, in this world?

Perfusion's V edit maps a word's encoding e to W(e - r(e) i*) + g(e) o*: with r and g near 1 that is
the word's own value with its mean part swapped for the target, one vector whatever the word's
place or neighbours. This probe makes that edit with the world's own nouns, so no training is in the
way: the value-side context row of a noun A is given ``mean(A') - mean(A)`` on top, where ``mean`` is
a noun's row averaged over the five places and A' the noun of A's shape in the next colour. The keys
are left alone (as the global key lock leaves the superclass word's keys). Four arms, each scored on
the looks it asks for (A' at A's place; in pairs C' at C's place too):

* ``one, as a noun``: the caption says A' (the world's own binding of that look, no edit);
* ``one, added``: the caption says A, its value row gets the shift;
* ``two, as nouns``: the caption says A' and C' (two shapes, at two places);
* ``two, added``: the caption says A and C, both value rows shifted.

If the added arms fall short of the noun arms only in pairs, a constant value shift carries a look
but not to which place it belongs, so two rank-1 V edits cannot be told apart here however they are
trained: the pair of concepts needs a world that places objects through its attention maps (keys).

    python -m toyworld.additive_edit [--samples 2] [--weights PATH]
"""

from __future__ import annotations

from collections import Counter

from toyworld import scorer, world
from toyworld.evaluate import Sampling
from toyworld.place_route import (
    BACKGROUND,
    PLACE_PAIRS,
    SEED,
    conditional_halves,
    probe_args,
    run_probe,
    token_index,
)

ARMS = ("one, as a noun", "one, added", "two, as nouns", "two, added")
SHAPE_PAIRS = (("ball", "block"), ("block", "bar"), ("bar", "ball"))


def recoloured(noun: str) -> str:
    """The noun of the same shape in the next of the world's colours."""
    colour, shape = world.NOUNS[noun]
    colours = list(world.COLOURS)
    return world.noun(colours[(colours.index(colour) + 1) % len(colours)], shape)


def add_to_value_rows(shifts: dict[int, object]):
    """An attn2 patch that adds ``shifts[row]`` to those rows of the conditional context that to_v
    sees; keys and the unconditional half are left alone."""

    def patch(n, context, value, extra):
        value = value.clone()
        for half in conditional_halves(extra, value.shape[0]):
            for row, shift in shifts.items():
                value[half, row] += shift.to(value)
        return n, context, value

    return patch


def measure(nodes, model, clip, vae, samples: int) -> dict[str, Counter]:
    """Per arm, how many samples draw every asked-for look at its place ("right") or not."""
    import torch

    def encode(text):
        return nodes.CLIPTextEncode().encode(clip, text)[0]

    def mean_row(noun):
        rows = []
        for place in world.SLOTS:
            caption = world.caption(BACKGROUND, **{place: noun})
            rows.append(encode(caption)[0][0][0, token_index(clip, caption, noun)])
        return torch.stack(rows).mean(0)

    means: dict[str, torch.Tensor] = {}

    def shift(noun):
        for w in (noun, recoloured(noun)):
            if w not in means:
                means[w] = mean_row(w)
        return means[recoloured(noun)] - means[noun]

    negative = encode("")
    sampling = Sampling()
    counts = {arm: Counter() for arm in ARMS}
    colours = list(world.COLOURS)
    for k, (shape_a, shape_c) in enumerate(SHAPE_PAIRS):
        for i, colour in enumerate(colours):
            a = world.noun(colour, shape_a)
            c = world.noun(colours[(i + k + 1) % len(colours)], shape_c)
            for p, q in PLACE_PAIRS:
                cases = {  # arm: (the caption's noun at each place, are their value rows shifted)
                    "one, as a noun": ({p: recoloured(a)}, False),
                    "one, added": ({p: a}, True),
                    "two, as nouns": ({p: recoloured(a), q: recoloured(c)}, False),
                    "two, added": ({p: a, q: c}, True),
                }
                for arm, (names, added) in cases.items():
                    caption = world.caption(BACKGROUND, **names)
                    patched = model
                    if added:
                        rows = {token_index(clip, caption, w): shift(w) for w in names.values()}
                        patched = model.clone()
                        patched.set_model_attn2_patch(add_to_value_rows(rows))
                    looks = {at: recoloured(w) if added else w for at, w in names.items()}
                    asked = [world.Thing(w, *world.NOUNS[w], at) for at, w in looks.items()]
                    latent = {"samples": torch.zeros(samples, 4, world.GRID, world.GRID)}
                    out = nodes.common_ksampler(
                        patched, SEED, sampling.steps, sampling.cfg, sampling.sampler_name,
                        sampling.scheduler, encode(caption), negative, latent,
                    )[0]  # fmt: skip
                    for image in vae.decode(out["samples"]).cpu().numpy():
                        reading = scorer.read(image)
                        right = all(scorer.thing_matches(reading, t) for t in asked)
                        counts[arm]["right" if right else "wrong"] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    a = probe_args("toyworld.additive_edit", __doc__, 2, "pair of nouns, pair of places and arm", argv)
    name, counts = run_probe(measure, a.samples, a.weights, "toyworld-additive-")
    print(f"{name}: every asked-for look drawn at its place")
    print("\n".join(f"  {arm:<16} {rate_line(c)}" for arm, c in counts.items()))
    return 0


def rate_line(c: Counter) -> str:
    """The rate of "right" with its binomial standard error, and the count."""
    n = sum(c.values())
    rate = c["right"] / n
    return f"{rate:.2f} ± {(rate * (1 - rate) / n) ** 0.5:.2f}  n={n}"


if __name__ == "__main__":
    raise SystemExit(main())
