"""On the toy world, a concept trained through the pack's nodes shows up where the prompt puts it.

A mechanism test (3 cross-attention layers, random CLIP), not a claim about real SD1.5; the full
comparison is ``make bench-quality`` (benchmarks/README.md, "Quality"). Measured on the current
world at bias 0.7 (24 samples, 6 prompts that move the concept): fidelity 0.00 -> 0.96 and the
concept at its prompted place 0.00 -> 0.88, but the rest of the prompt's alignment 0.92 -> 0.00 (see
README, "The toy world"); the margins leave room for the sampling noise of 24 samples (one is 0.04).
"""

from __future__ import annotations

import pytest

from benchmarks.quality import QualityRun, eval_scenes, rates
from harness.perfusion_graphs import ConceptUse
from toyworld import world
from toyworld.recipe import SUGGESTED_BIAS, Recipe

FIDELITY_GAIN = 0.6  # fidelity over the superclass prompt, at least (measured +0.96)
IN_PLACE_GAIN = 0.5  # the concept at its prompted place, over the superclass prompt (measured +0.88)


@pytest.mark.slow
def test_toyworld_concept_shows_up_where_the_prompt_puts_it(comfy_host):
    from toyworld.checkpoint import toyworld_checkpoint

    ckpt = comfy_host.add_checkpoint(toyworld_checkpoint())
    zorp = world.CONCEPTS["zorp"]
    run = QualityRun(comfy_host, ckpt, Recipe(), samples=4)  # 6 prompts x 4 = 24 samples
    concept = run.train(zorp, "test_toyworld_zorp")
    scenes = eval_scenes(zorp)[::2]  # 6 prompts: 4 moves, 2 next to another object
    unpatched = rates(run.sample(scenes, [zorp], superclass_prompt=True))
    patched = rates(run.sample(scenes, [zorp], [ConceptUse(concept, SUGGESTED_BIAS)]))
    assert patched["fidelity"] - unpatched["fidelity"] >= FIDELITY_GAIN, (unpatched, patched)
    assert patched["in_place"] - unpatched["in_place"] >= IN_PLACE_GAIN, (unpatched, patched)
