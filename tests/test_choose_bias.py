"""Choose Perfusion Bias and the training node's CLIP vision option, through ComfyUI's own executor,
with a random-weight CLIP vision model that the host's CLIPVisionLoader loads (mechanics only: random
weights embed images as noise, so which bias wins says nothing here; the rule is tested in
test_operating_point.py)."""

import re

import numpy as np
import pytest

from harness.perfusion_graphs import ConceptUse, choose_bias_prompt, generate_prompt, train_prompt
from perfusion_core.concept_file import load_concept

GRID = {"bias_min": 0.3, "bias_max": 1.1, "bias_step": 0.8}
SEARCH = {
    **GRID,
    "key_lock": "local",
    "temperature": 0.15,
    "seeds": 2,
    "seed": 0,
    "prompt": "a photo of a {}",
    "steps": 2,
    "cfg": 6.0,
    "sampler_name": "euler",
    "scheduler": "normal",
    "resolution": 64,
}


@pytest.fixture(scope="module")
def clip_vision(comfy_host) -> str:
    from harness.clip_vision_fixture import clip_vision_fixture

    return comfy_host.add_file("clip_vision", clip_vision_fixture())


def chosen_bias(result, node: str) -> float:
    (text,) = result.outputs[node]["text"]
    return float(re.search(r"(?:chosen|suggested) bias (\d+\.\d+)", text).group(1))


def test_the_chosen_bias_is_saved_and_the_loader_uses_it_when_asked(
    comfy_host, tiny_ckpt_name, trained_concepts, toy_images, clip_vision
):
    prompt = choose_bias_prompt(
        tiny_ckpt_name, trained_concepts["hugsy"], toy_images["hugsy"], clip_vision, "chosen_hugsy", **SEARCH
    )
    result = comfy_host.run(prompt).raise_for_error()
    bias = chosen_bias(result, prompt.node("PerfusionChooseBias").id)
    assert bias in (0.3, 1.1)
    info = load_concept(comfy_host.folder("perfusion")[0] / "chosen_hugsy.safetensors").info
    assert info.suggested_beta_local == pytest.approx(bias)
    assert "CLIP vision" in info.training_settings["suggested_bias_local"]
    (curve,) = comfy_host.images(result, prompt.node("PreviewImage").id)
    assert curve.shape == (320, 640, 3)

    def image(bias_widget: float, mode: str) -> np.ndarray:
        use = ConceptUse("chosen_hugsy.safetensors", bias=bias_widget, bias_mode=mode)
        prompt = generate_prompt(tiny_ckpt_name, [use])
        (img,) = comfy_host.images(comfy_host.run(prompt).raise_for_error())
        return img

    suggested = image(2.0, "suggested")  # the widget's 2.0 (a shut gate) is not used
    assert np.array_equal(suggested, image(bias, "widget"))
    assert not np.array_equal(suggested, image(2.0, "widget"))


def test_a_prompt_without_the_word_slot_is_refused_naming_the_widget(
    comfy_host, tiny_ckpt_name, trained_concepts, toy_images, clip_vision
):
    search = {**SEARCH, "prompt": "a photo of hugsy"}
    prompt = choose_bias_prompt(
        tiny_ckpt_name, trained_concepts["hugsy"], toy_images["hugsy"], clip_vision, "never_saved", **search
    )
    result = comfy_host.run(prompt)
    assert not result.success and "prompt" in result.error_text and "{}" in result.error_text
    assert not (comfy_host.folder("perfusion")[0] / "never_saved.safetensors").exists()


def test_training_with_clip_vision_connected_chooses_the_suggested_bias(
    comfy_host, tiny_ckpt_name, toy_images, clip_vision
):
    prompt = train_prompt(
        tiny_ckpt_name,
        toy_images["hugsy"][:1],
        steps=1,
        covariance_prompts=64,
        resolution=64,
        save_name="trained_with_choice",
    )
    vision = prompt.add("CLIPVisionLoader", clip_name=clip_vision)
    trainer = prompt.node("PerfusionTrainConcept")
    prompt.inputs(trainer)["clip_vision"] = vision[0]
    result = comfy_host.run(prompt).raise_for_error()
    bias = chosen_bias(result, trainer.id)
    info = load_concept(comfy_host.folder("perfusion")[0] / "trained_with_choice.safetensors").info
    assert info.suggested_beta_local == pytest.approx(bias)
    assert "biases 0.4-0.9" in info.training_settings["suggested_bias_local"]
