"""`python -m toyworld.place_route`: does the toy world tell the UNet where a noun is through the
noun's cross-attention key (the attention map, as in SD) or through its value?

For each noun and pair of places (p, q), the one-object caption with the noun at p is sampled three
ways: as it is; with the noun's row of the context that the cross-attention keys see swapped for
the noun's row in the caption that puts it at q; and with the row the values see swapped instead
(ComfyUI's ``attn2_patch``, which gives to_k and to_v their inputs). Where the object is drawn then
says which of the two carries the place.

Why it matters for Perfusion: the key lock keeps a concept's attention map (where) and its V target
carries the look (what). The V target is one vector per layer, so a world that routes places through
values leaves a concept's place to its context alone, and beside another object it loses (README,
"Where two concepts fail").

    python -m toyworld.place_route [--samples 4] [--weights PATH]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

from toyworld import scorer, world
from toyworld.evaluate import Sampling

PLACE_PAIRS = (("left", "centre"), ("top", "right"), ("bottom", "left"))
ARMS = ("as prompted", "key from q", "value from q")
BACKGROUND = "gray"
SEED = 300


def token_index(clip, caption: str, word: str) -> int:
    """Where ``word`` (one CLIP token: the world's nouns are) sits in the caption's token rows."""
    from toyworld.build import token_ids

    return token_ids(clip, caption).index(token_ids(clip, word)[1])


def swap_row(row_a: int, row_b: int, donor, key: bool):
    """An attn2 patch that puts ``donor[row_b]`` into row ``row_a`` of the conditional context that
    to_k (``key``) or to_v sees; the unconditional half is left alone."""

    def patch(n, context, value, extra):
        target = (context if key else value).clone()
        for half in conditional_halves(extra, target.shape[0]):
            target[half, row_a] = donor[row_b].to(target)
        return (n, target, value) if key else (n, context, target)

    return patch


def conditional_halves(extra: dict, batch: int) -> list[slice]:
    """The slices of an attn2 patch's batch that hold the conditional context (cond_or_uncond 0), the
    only part the probes change."""
    kinds = extra["cond_or_uncond"]
    per = batch // len(kinds)
    return [slice(c * per, (c + 1) * per) for c, kind in enumerate(kinds) if kind == 0]


def measure(nodes, model, clip, vae, samples: int) -> dict[str, Counter]:
    """Per arm, how many samples draw the object at p (the caption's place), at q, or neither."""
    import torch

    def encode(text):
        return nodes.CLIPTextEncode().encode(clip, text)[0]

    negative = encode("")
    sampling = Sampling()  # the world's sampler, as toyworld.evaluate samples it
    counts = {arm: Counter() for arm in ARMS}
    for noun, look in world.NOUNS.items():
        for p, q in PLACE_PAIRS:
            caption, donor_caption = (
                world.caption(BACKGROUND, **{p: noun}),
                world.caption(BACKGROUND, **{q: noun}),
            )
            row_a, row_b = token_index(clip, caption, noun), token_index(clip, donor_caption, noun)
            donor = encode(donor_caption)[0][0][0]
            positive = encode(caption)
            for arm in ARMS:
                patched = model
                if arm != "as prompted":
                    patched = model.clone()
                    patched.set_model_attn2_patch(swap_row(row_a, row_b, donor, key=arm == "key from q"))
                latent = {"samples": torch.zeros(samples, 4, world.GRID, world.GRID)}
                out = nodes.common_ksampler(
                    patched, SEED, sampling.steps, sampling.cfg, sampling.sampler_name,
                    sampling.scheduler, positive, negative, latent,
                )[0]  # fmt: skip
                for image in vae.decode(out["samples"]).cpu().numpy():
                    reading = scorer.read(image)
                    at = {
                        place: scorer.thing_matches(reading, world.Thing(noun, *look, place))
                        for place in (p, q)
                    }
                    counts[arm]["at p" if at[p] else "at q" if at[q] else "neither"] += 1
    return counts


def run_probe(measure, samples: int, weights: Path | None, prefix: str) -> tuple[str, dict[str, Counter]]:
    """Loads the world (``weights``: another build's) into an in-process ComfyUI and runs
    ``measure(nodes, model, clip, vae, samples)`` under inference mode: the checkpoint's name and the
    counts. Shared by this probe and :mod:`toyworld.additive_edit`."""
    import torch

    from harness.inprocess import ComfyHost
    from toyworld.checkpoint import toyworld_checkpoint

    ckpt = toyworld_checkpoint(weights=weights)
    ComfyHost.get(Path(tempfile.mkdtemp(prefix=prefix)), checkpoints=[ckpt])
    nodes = sys.modules["nodes"]
    with torch.inference_mode():
        model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(ckpt.name)[:3]
        return ckpt.name, measure(nodes, model, clip, vae, samples)


def probe_args(module: str, doc: str, samples: int, per: str, argv: list[str] | None) -> argparse.Namespace:
    """The probes' command line: ``--samples`` (how many per ``per``) and ``--weights``."""
    ap = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=samples, help=f"samples per {per}")
    ap.add_argument("--weights", type=Path, help="another build's weights (default: the committed ones)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = probe_args("toyworld.place_route", __doc__, 4, "noun, pair of places and arm", argv)
    name, counts = run_probe(measure, a.samples, a.weights, "toyworld-place-")
    print(f"{name}: where the object is drawn (p: the caption's place, q: the swapped row's)")
    for arm, c in counts.items():
        n = sum(c.values())
        print(
            f"  {arm:<14} "
            + "  ".join(f"{k} {c[k] / n:.2f}" for k in ("at p", "at q", "neither"))
            + f"  n={n}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
