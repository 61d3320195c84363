"""The host's dataset nodes (lists, one image each) into the training node: one concept from them all."""

import pytest
import torch
from PIL import Image

from harness.graph import Graph
from harness.perfusion_graphs import train_prompt
from harness.sample_images import toy_image
from perfusion_core.concept_file import load_concept
from perfusion_core.training import caption_template, plan_batch

SIZES = [(96, 96), (80, 120), (128, 64), (72, 72)]  # (width, height): the folder mixes sizes
CAPTIONS = ["a photo of hugsy on the grass", "a teddy on a bench", "a blurry picture", ""]


TRAINER = "PerfusionTrainConcept"


def dataset_prompt(ckpt_name: str, loader: str, folder: str, save_name: str) -> Graph:
    """train_prompt with its LoadImage (one image: no batching nodes) replaced by one dataset loader."""
    prompt = train_prompt(ckpt_name, ["unused.png"], steps=2, covariance_prompts=64, save_name=save_name)
    del prompt[prompt.node("LoadImage").id]
    dataset = prompt.add(loader, folder=folder)
    trainer = prompt.inputs(TRAINER)
    trainer["images"] = dataset[0]
    if loader == "LoadImageTextDataSetFromFolder":
        trainer["captions"] = dataset[1]
    return prompt


@pytest.fixture(scope="module")
def dataset_folder(comfy_host):
    if "LoadImageDataSetFromFolder" not in comfy_host.node_names:
        pytest.skip("this ComfyUI has no dataset nodes")
    folder = comfy_host.base_dir / "input" / "hugsy_set"
    folder.mkdir(parents=True, exist_ok=True)
    for i, (size, caption) in enumerate(zip(SIZES, CAPTIONS, strict=True)):
        image, _ = toy_image(i)
        image.resize(size, Image.BILINEAR).save(folder / f"hugsy_{i}.png")
        (folder / f"hugsy_{i}.txt").write_text(caption)
    return folder.name


def test_a_folder_of_four_images_of_different_sizes_trains_one_concept_recording_four(
    comfy_host, tiny_ckpt_name, dataset_folder
):
    prompt = dataset_prompt(tiny_ckpt_name, "LoadImageDataSetFromFolder", dataset_folder, "from_folder")
    prompt.inputs("PerfusionSaveConcept")["overwrite"] = False  # a second run (one per image) would fail here
    result = comfy_host.run(prompt).raise_for_error()
    assert len(result.outputs[prompt.node(TRAINER).id]["text"]) == 1, "the training node ran once per image"
    concept = load_concept(comfy_host.base_dir / "models" / "perfusion" / "from_folder.safetensors")
    assert concept.info.training_images == 4
    assert "captions" not in concept.info.training_settings


def test_captions_are_the_training_prompts(comfy_host, tiny_ckpt_name, dataset_folder):
    perfusion = comfy_host.base_dir / "models" / "perfusion"
    runs = {
        "with_captions": "LoadImageTextDataSetFromFolder",
        "without_captions": "LoadImageDataSetFromFolder",
    }
    concepts = {}
    for name, loader in runs.items():
        comfy_host.run(dataset_prompt(tiny_ckpt_name, loader, dataset_folder, name)).raise_for_error()
        concepts[name] = load_concept(perfusion / f"{name}.safetensors")
    captioned = concepts["with_captions"]
    assert captioned.info.training_images == 4
    assert captioned.info.training_settings["captions"] == "4"
    # same images, seed and steps: only the prompts differ
    assert not torch.equal(captioned.token_embedding, concepts["without_captions"].token_embedding)


def test_one_value_inputs_refuse_a_list(comfy_host, tiny_ckpt_name, dataset_folder):
    prompt = dataset_prompt(tiny_ckpt_name, "LoadImageTextDataSetFromFolder", dataset_folder, "refused")
    captions = prompt.node("LoadImageTextDataSetFromFolder")[1]
    prompt.inputs(TRAINER)["concept_word"] = captions  # four captions where one word belongs
    result = comfy_host.run(prompt)
    assert result.error_kind == "execution"
    assert "concept_word: got 4 values" in result.error_text


@pytest.mark.parametrize(
    ("caption", "template"),
    [
        ("a photo of hugsy on the grass", "a photo of {} on the grass"),
        ("Hugsy and hugsy", "{} and teddy"),
        ("a teddy on a teddy", "a {} on a teddy"),
        ("a blurry   picture", "a photo of a {}, a blurry picture"),
        ("", "a photo of a {}"),
        ("a {weird} caption", "a photo of a {}, a (weird) caption"),
        ("teddybear hugsyish", "a photo of a {}, teddybear hugsyish"),
    ],
)
def test_caption_template(caption, template):
    assert caption_template(caption, "hugsy", "teddy") == template
    assert template.format("x")  # exactly one slot, nothing else a format string would read


def test_each_sample_takes_its_images_caption():
    captions = [f"caption {i} of a {{}}" for i in range(5)]
    for batch_size in (2, 5, 9):
        plan = plan_batch(torch.Generator().manual_seed(0), 5, ["unused {}"], batch_size, 0.5, captions)
        assert plan.templates == [captions[i] for i in plan.image_indices]
