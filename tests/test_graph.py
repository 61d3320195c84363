"""The graph builder every test, benchmark and workflow uses: ids, links and lookups (no host needed)."""

from __future__ import annotations

import copy
import json

import pytest

from harness.graph import Graph
from harness.perfusion_graphs import (
    ConceptUse,
    add_unpatched_branch,
    generate_prompt,
    resume_from,
    train_prompt,
    with_model_patch,
)


def test_ids_count_up_and_nodes_link_their_outputs():
    g = Graph()
    ckpt = g.checkpoint("model.safetensors")
    pos = g.encode(ckpt[1], "a dog")
    assert (ckpt.id, pos.id) == ("1", "2")
    assert g.inputs(pos) == {"text": "a dog", "clip": ["1", 1]}
    save = g.save(g.add("VAEDecode", samples=pos, vae=ckpt[2]), "out")
    assert g.inputs(save)["images"] == ["3", 0]  # a node given as an input links its output 0
    assert json.loads(json.dumps(g)) == dict(g)  # what POST /prompt takes, as it is


def test_a_loaded_graph_grows_after_its_highest_id():
    g = Graph({"7": {"class_type": "A", "inputs": {}}, "12:3": {"class_type": "B", "inputs": {}}})
    assert g.add("C").id == "8"
    assert isinstance(copy.deepcopy(g), Graph)


def test_nodes_are_found_by_class():
    g = generate_prompt(
        "m.safetensors", [ConceptUse("a.safetensors"), ConceptUse("b.safetensors", bias_end=0.5)]
    )
    first, second = g.nodes("PerfusionConceptLoader")
    assert g.inputs(second)["model"] == first[0]
    assert g.inputs(first)["bias_schedule"] == "constant"
    assert (g.inputs(second)["bias_schedule"], g.inputs(second)["bias_end"]) == ("linear", 0.5)
    assert g.inputs("KSampler")["model"] == second[0]
    with pytest.raises(LookupError, match="2 CLIPTextEncode nodes"):
        g.node("CLIPTextEncode")
    with pytest.raises(LookupError, match="0 LoraLoader"):
        g.node("LoraLoader")


def test_images_and_masks_are_batched_in_order():
    g = Graph()
    images, masks = g.load_images(["a.png", "b.png", "c.png"])
    loads = g.nodes("LoadImage")
    assert [g.inputs(n)["image"] for n in loads] == ["a.png", "b.png", "c.png"]
    first = g[g.inputs(images)["image1"][0]]["inputs"]
    assert (first["image1"], first["image2"]) == (loads[0][0], loads[1][0])
    assert g.inputs(images)["image2"] == loads[2][0]
    assert g[masks.id]["class_type"] == "ImageToMask"
    one = Graph()
    batch = one.batch([one.add("LoadImage", image=n) for n in "xyz"], one_node=True)
    assert list(one.inputs(batch)) == ["images.image0", "images.image1", "images.image2"]


def test_train_prompt_extra_overrides_a_widget_and_leaves_images_to_link():
    g = train_prompt("m.safetensors", [], extra={"flip": False, "steps": 3})
    trainer = g.inputs("PerfusionTrainConcept")
    assert (trainer["flip"], trainer["steps"], trainer["images"]) == (False, 3, None)
    assert "mask" not in trainer


def test_a_model_patch_goes_before_the_first_or_after_the_last_concept():
    uses = [ConceptUse("a.safetensors"), ConceptUse("b.safetensors")]
    g = generate_prompt("m.safetensors", uses)
    lora = {"lora_name": "l.safetensors", "strength_model": 1.0, "strength_clip": 1.0}
    after = with_model_patch(g, "LoraLoader", lora, patches_clip=True)
    patch, (first, last) = after.node("LoraLoader"), after.nodes("PerfusionConceptLoader")
    assert (after.inputs(patch)["model"], after.inputs(patch)["clip"]) == (last[0], last[1])
    assert after.inputs("KSampler")["model"] == patch[0]
    assert all(after.inputs(e)["clip"] == patch[1] for e in after.nodes("CLIPTextEncode"))
    before = with_model_patch(g, "LoraLoader", lora, after_concepts=False, patches_clip=True)
    patch = before.node("LoraLoader")
    assert before.inputs(patch)["model"] == before.node("CheckpointLoaderSimple")[0]
    assert (before.inputs(first)["model"], before.inputs(first)["clip"]) == (patch[0], patch[1])
    assert before.inputs("KSampler")["model"] == last[0]
    assert "LoraLoader" not in {n["class_type"] for n in g.values()}  # the original is left as it was
    plain = with_model_patch(generate_prompt("m.safetensors"), "LoraLoaderModelOnly", {"lora_name": "l"})
    ckpt = plain.node("CheckpointLoaderSimple")
    assert plain.inputs("LoraLoaderModelOnly")["model"] == ckpt[0]
    assert plain.inputs("KSampler")["model"] == plain.node("LoraLoaderModelOnly")[0]
    assert all(plain.inputs(e)["clip"] == ckpt[1] for e in plain.nodes("CLIPTextEncode"))


def test_an_unpatched_branch_samples_the_checkpoint_like_the_first_sampler():
    g = generate_prompt("m.safetensors", [ConceptUse("a.safetensors")], seed=9, steps=3)
    first = g.inputs("KSampler")
    save = add_unpatched_branch(g, "a dog", "branch")
    second = g.inputs(g.nodes("KSampler")[1])
    ckpt = g.node("CheckpointLoaderSimple")
    assert second["model"] == ckpt[0] and second["latent_image"] == first["latent_image"]
    assert {k: second[k] for k in ("seed", "steps")} == {"seed": 9, "steps": 3}
    assert g.inputs(save)["filename_prefix"] == "branch"


def test_resume_from_links_a_concept_file_into_the_trainer():
    g = train_prompt("m.safetensors", ["a.png"])
    trainer = resume_from(g, "old.safetensors")
    concept = g.node("PerfusionConceptFile")
    assert g.inputs(trainer)["resume"] == concept[0]
    assert g.inputs(concept) == {"concept_name": "old.safetensors"}
