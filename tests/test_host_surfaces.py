"""What the pack takes from the host: the public tokenizer output, and one clear error where a host
lacks what the pack hooks."""

import sys

import pytest
import torch

from harness.perfusion_graphs import ConceptUse, generate_prompt


@pytest.fixture(scope="module")
def clip(comfy_host, tiny_ckpt_name):
    with torch.inference_mode():
        return sys.modules["nodes"].CheckpointLoaderSimple().load_checkpoint(tiny_ckpt_name)[1]


@pytest.fixture(scope="module")
def concept_clip(perfusion_pack, clip):
    text_encoder = perfusion_pack.nodes.text_encoder
    words = [
        text_encoder.ConceptWord(word, text_encoder.split_embedding(clip, torch.full((768,), value)))
        for word, value in (("hugsy", 1.0), ("zorbo", 2.0))
    ]
    return text_encoder.clip_with_concepts(clip, words)


def tokens(clip, text: str) -> list:
    return [t for batch in clip.tokenize(text, return_word_ids=True)["l"] for t in batch]


@pytest.mark.parametrize(
    ("prompt", "stock"),
    [
        # "cat" and "dog" are the first placeholder words: typed in a prompt they stay themselves
        ("a (hugsy:1.3) beside a cat, zorbo and a dog", "a (teddy:1.3) beside a cat, teddy and a dog"),
        ("Hugsy's hugsy-like HUGSY", "teddy's hugsy-like teddy"),
        ("hugsy " * 80, "teddy " * 80),  # past the first 77-token window
    ],
)
def test_a_concept_word_is_one_embedding_token_where_the_stock_tokenizer_has_one_word(
    clip, concept_clip, prompt, stock
):
    """The concept prompt tokenizes as the stock tokenizer tokenizes the prompt with a one-token word
    in each concept word's place (weights, windows and word ids included), the concept words' tokens
    being their embeddings."""
    got, want = tokens(concept_clip, prompt), tokens(clip, stock)
    teddy = tokens(clip, "teddy")[1][0]
    assert len(got) == len(want)
    swapped = 0
    for (token, weight, word_id), (stock_token, stock_weight, stock_id) in zip(got, want, strict=True):
        assert (weight, word_id) == (stock_weight, stock_id)
        if isinstance(token, torch.Tensor):
            assert stock_token == teddy
            assert float(token[0]) in (1.0, 2.0)
            swapped += 1
        else:
            assert token == stock_token
    assert swapped == prompt.lower().count("hugsy") + prompt.count("zorbo") - prompt.count("hugsy-")


def test_prompts_without_a_concept_word_tokenize_as_the_stock_tokenizer(clip, concept_clip):
    for text in ("a photo of a cat", "embedding:missing a dog", "hugsyx zorbos", ""):
        assert concept_clip.tokenize(text) == clip.tokenize(text)


def test_this_host_has_every_surface_the_pack_hooks(perfusion_pack):
    assert perfusion_pack.nodes.host_support.probe() == []


def test_a_host_lacking_a_surface_gets_one_error_naming_its_version_and_the_surface(
    comfy_host, tiny_ckpt_name, trained_concepts, perfusion_pack, monkeypatch
):
    support = perfusion_pack.nodes.host_support
    monkeypatch.setattr(
        support, "PROBLEMS", ["comfy.sd1_clip.SDTokenizer.tokenize_with_weights (tokenizing)"]
    )
    result = comfy_host.run(generate_prompt(tiny_ckpt_name, [ConceptUse(trained_concepts["hugsy"])]))
    assert result.error_kind == "execution"
    assert result.error["exception_type"].endswith("HostIncompatibleError")
    assert f"cannot run on ComfyUI {support.comfyui_version()}" in result.error_text
    assert "SDTokenizer.tokenize_with_weights" in result.error_text
