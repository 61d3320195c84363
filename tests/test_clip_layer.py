"""CLIP Set Last Layer through the executor: a concept records the text-encoder layer it was trained
on, and a CLIP at another layer (set before or after the loader) is refused, naming both layers."""

import sys
from collections.abc import Sequence

import pytest
import torch

from harness.graph import Graph, Node
from harness.perfusion_graphs import ConceptUse, generate_prompt, train_prompt
from perfusion_core.concept_file import load_concept

pytestmark = pytest.mark.slow  # its fixture trains two concepts and a covariance at a second layer

LAYERS = (-1, -2)
TEMPLATES = ("a photo of a {}", "a good photo of the {}", "a close-up photo of a {}")  # train_prompt's


def set_last_layer(prompt: Graph, layer: int, clip: list, consumers: Sequence[Node]) -> Graph:
    """Inserts CLIPSetLastLayer on `clip`, feeding the `consumers` nodes' clip input."""
    layered_clip = prompt.add("CLIPSetLastLayer", clip=clip, stop_at_clip_layer=layer)
    for node in consumers:
        prompt.inputs(node)["clip"] = layered_clip[0]
    return prompt


def checkpoint_clip(prompt: Graph) -> list:
    return prompt.node("CheckpointLoaderSimple")[1]


@pytest.fixture(scope="module")
def layered(comfy_host, tiny_ckpt_name, toy_images) -> dict[int, str]:
    """Concepts trained (2 steps) behind CLIP Set Last Layer -1 and -2: layer -> file name."""
    files = {}
    for layer in LAYERS:
        name = f"hugsy_layer{-layer}"
        prompt = train_prompt(tiny_ckpt_name, toy_images["hugsy"], steps=2, save_name=name)
        trainer = prompt.node("PerfusionTrainConcept")
        comfy_host.run(set_last_layer(prompt, layer, checkpoint_clip(prompt), [trainer])).raise_for_error()
        files[layer] = f"{name}.safetensors"
    return files


def superclass_encoding(pack, clip, layer: int) -> torch.Tensor:
    """Mean encoding of 'teddy' over the training templates, with the CLIP at `layer`."""
    clip = clip.clone()
    clip.clip_layer(layer)
    te = pack.nodes.text_encoder
    (teddy,) = te.word_token_ids(clip, "teddy")
    rows = []
    for template in TEMPLATES:
        tokens = clip.tokenize(template.format("teddy"))
        position = [t[0] for t in tokens[te.text_encoders(clip)[0].key][0]].index(teddy)
        rows.append(clip.encode_from_tokens(tokens)[0, position].float())
    return torch.stack(rows).mean(0)


def test_training_records_the_layer_and_encodes_at_it(comfy_host, tiny_ckpt_name, perfusion_pack, layered):
    with torch.inference_mode():
        clip = sys.modules["nodes"].CheckpointLoaderSimple().load_checkpoint(tiny_ckpt_name)[1]
        expected = {layer: superclass_encoding(perfusion_pack, clip, layer) for layer in LAYERS}
    assert perfusion_pack.nodes.text_encoder.encoder_layer(clip) == -1  # SD1.5's default: the last
    assert float((expected[-1] - expected[-2]).norm()) > 0.1 * float(expected[-1].norm())
    for layer, other in zip(LAYERS, reversed(LAYERS)):
        concept = load_concept(comfy_host.base_dir / "models" / "perfusion" / layered[layer])
        assert concept.info.clip_layer == layer
        torch.testing.assert_close(concept.superclass_encoding, expected[layer], rtol=1e-4, atol=1e-4)
        # i* starts at the superclass encoding and has moved 2% towards the concept's: same layer
        assert (concept.i_star - expected[layer]).norm() < (concept.i_star - expected[other]).norm()


@pytest.mark.parametrize(("trained", "used"), [(-1, -1), (-1, -2), (-2, -2), (-2, -1)])
def test_a_concept_is_refused_by_a_clip_at_another_layer(comfy_host, tiny_ckpt_name, layered, trained, used):
    prompt = generate_prompt(tiny_ckpt_name, [ConceptUse(layered[trained])], positive="a photo of hugsy")
    loaders = prompt.nodes("PerfusionConceptLoader")
    result = comfy_host.run(set_last_layer(prompt, used, checkpoint_clip(prompt), loaders))
    if trained == used:
        assert result.success, result.error_text
        return
    assert result.error_kind == "execution" and result.error["node_type"] == "PerfusionConceptLoader"
    message = result.error["exception_message"]
    print(f"\n{message}")
    assert f"trained with the text encoder's layer {trained}" in message
    assert f"this CLIP uses layer {used}" in message


@pytest.mark.parametrize("text", ["a photo of hugsy", "a photo of a dog"])
def test_a_clip_set_last_layer_after_the_loader_is_refused_for_prompts_with_the_word(
    comfy_host, tiny_ckpt_name, layered, text
):
    prompt = generate_prompt(tiny_ckpt_name, [ConceptUse(layered[-1])], positive=text)
    loader_clip = prompt.node("PerfusionConceptLoader")[1]
    result = comfy_host.run(set_last_layer(prompt, -2, loader_clip, prompt.nodes("CLIPTextEncode")))
    if "hugsy" not in text:
        assert result.success, result.error_text
        return
    assert result.error_kind == "execution" and result.error["node_type"] == "CLIPTextEncode"
    message = result.error["exception_message"]
    assert "trained with the text encoder's layer -1" in message and "this CLIP uses layer -2" in message
