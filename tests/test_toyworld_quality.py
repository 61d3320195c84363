"""On the toy world, a concept trained through the pack's nodes shows up where the prompt puts it.

A mechanism test (3 cross-attention layers, random CLIP), not a claim about real SD1.5; the full
comparison is ``make bench-quality`` (benchmarks/README.md, "Quality"), which measured at bias 0.7
(72 samples): fidelity 0.00 -> 0.625, alignment 0.958 -> 0.708. The margins leave room for the
sampling noise of 24 samples here (one sample is 0.04).
"""

from __future__ import annotations

import pytest

from benchmarks.quality import QualityRun, eval_scenes, rates
from harness.perfusion_graphs import ConceptUse
from toyworld import world
from toyworld.recipe import SUGGESTED_BIAS, Recipe

FIDELITY_GAIN = 0.3  # fidelity over the superclass prompt, at least (measured +0.625)
ALIGNMENT_LOSS = 0.4  # alignment below the unpatched model's, at most (measured -0.25)


@pytest.mark.slow
def test_toyworld_concept_raises_fidelity_and_keeps_alignment(comfy_host):
    from toyworld.checkpoint import toyworld_checkpoint

    ckpt = comfy_host.add_checkpoint(toyworld_checkpoint())
    zorp = world.CONCEPTS["zorp"]
    run = QualityRun(comfy_host, ckpt, Recipe(), samples=4)  # 6 prompts x 4 = 24 samples
    concept = run.train(zorp, "test_toyworld_zorp")
    scenes = eval_scenes(zorp)[::2]  # 6 prompts: 4 moves, 2 next to another block
    unpatched = rates(run.sample(scenes, [zorp], superclass_prompt=True))
    patched = rates(run.sample(scenes, [zorp], [ConceptUse(concept, SUGGESTED_BIAS)]))
    assert patched["fidelity"] - unpatched["fidelity"] >= FIDELITY_GAIN, (unpatched, patched)
    assert patched["alignment"] >= unpatched["alignment"] - ALIGNMENT_LOSS, (unpatched, patched)
