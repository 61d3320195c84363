"""The gate map node through the real executor: one row per prompt token, one column per concept,
and the gates the V edits open (perfusion_core.concept_set.ConceptSet.gates)."""

from __future__ import annotations

import torch

from harness.graph import Graph
from harness.perfusion_graphs import ConceptUse, add_concepts
from perfusion_core.concept import Concept, ConceptInfo
from perfusion_core.concept_set import AppliedConcept, ConceptSet


def test_the_gates_are_the_sigmoid_of_each_concepts_relevance():
    g = torch.Generator().manual_seed(0)
    applied = []
    for k, (beta, tau) in enumerate(((0.7, 0.15), (0.5, 0.1))):
        i_star = torch.randn(16, generator=g)
        concept = Concept(
            ConceptInfo(f"w{k}", "cat", "SD15", "x"), torch.randn(16), i_star, i_star * 2, torch.randn(16), {}
        )
        applied.append(AppliedConcept(concept, beta, tau))
    e = torch.randn(5, 16, generator=g)
    expected = torch.stack(
        [
            torch.sigmoid((e @ a.concept.u / (a.concept.i_star @ a.concept.u) - a.beta) / a.tau)
            for a in applied
        ],
        1,
    )
    torch.testing.assert_close(ConceptSet(tuple(applied)).gates(e), expected, rtol=1e-5, atol=1e-6)


def test_the_gate_map_shows_each_concept_most_open_on_its_own_word(
    comfy_host, tiny_ckpt_name, trained_concepts
):
    text = "a photo of hugsy next to zorbo"
    uses = [ConceptUse(trained_concepts["hugsy"]), ConceptUse(trained_concepts["zorbo"])]
    prompt = Graph()  # checkpoint -> the two loaders, chained -> Perfusion Gate Map -> SaveImage
    ckpt = prompt.checkpoint(tiny_ckpt_name)
    model, clip = add_concepts(prompt, ckpt[0], ckpt[1], uses)
    gate_map = prompt.add("PerfusionGateMap", model=model, clip=clip, text=text)
    save = prompt.save(gate_map, "gates")
    result = comfy_host.run(prompt).raise_for_error()
    (table,) = result.outputs[gate_map.id]["text"]
    header, *rows = [line.split("\t") for line in table.splitlines()]
    assert header == ["token", "hugsy", "zorbo"]
    tokens = [r[0] for r in rows]
    assert tokens == ["<start>", "a", "photo", "of", "hugsy", "next", "to", "zorbo", "<end>"], tokens
    gate = {r[0]: (float(r[1]), float(r[2])) for r in rows}
    print(table)
    # The tiny fixture's concepts train 8 steps on a random CLIP: their gates open little in a new
    # prompt (measured: hugsy 0.14 on its word, at most 0.11 elsewhere), but most on their own word.
    assert max(gate, key=lambda w: gate[w][0]) == "hugsy"
    assert max(gate, key=lambda w: gate[w][1]) == "zorbo"
    (image,) = comfy_host.images(result, node_id=save.id)
    assert image.shape[0] == 8 + 2 * 22 + 22 * len(rows) + 8 and image.shape[1] == 16 + 150 + 2 * 96
