"""What the pack takes from the host: the public tokenizer output, and one clear error where a host
lacks what the pack hooks."""

import sys
from pathlib import Path

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
    swapped = concept_tokens(tokens(concept_clip, prompt), tokens(clip, stock), tokens(clip, "teddy")[1][0])
    assert swapped == prompt.lower().count("hugsy") + prompt.count("zorbo") - prompt.count("hugsy-")


def concept_tokens(got: list, want: list, teddy: int) -> int:
    """How many concept embeddings `got` holds where `want` (the stock tokens) has `teddy`; every other
    token, weight and word id as in `want` (a textual inversion's vectors included)."""
    assert len(got) == len(want)
    swapped = 0
    for (token, weight, word_id), (stock_token, stock_weight, stock_id) in zip(got, want, strict=True):
        assert (weight, word_id) == (stock_weight, stock_id)
        if isinstance(stock_token, torch.Tensor):
            assert isinstance(token, torch.Tensor) and torch.equal(token, stock_token)
        elif isinstance(token, torch.Tensor):
            assert stock_token == teddy
            assert float(token[0]) in (1.0, 2.0)
            swapped += 1
        else:
            assert token == stock_token
    return swapped


@pytest.fixture(scope="module")
def user_embeddings(comfy_host):
    """Textual inversions (two CLIP-L vectors) in the host's embeddings folder whose names hold the
    concept word 'hugsy'; removed afterwards (the session host is shared)."""
    import folder_paths
    import safetensors.torch

    folder = Path(folder_paths.get_folder_paths("embeddings")[0])
    names = ("hugsy", "hugsy.v2", "styles/hugsy")
    paths = [folder / f"{name}.safetensors" for name in names]
    for i, path in enumerate(paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        safetensors.torch.save_file(
            {"emb_params": torch.randn(2, 768, generator=torch.Generator().manual_seed(i))}, str(path)
        )
    yield names
    for path in paths:
        path.unlink()


@pytest.mark.parametrize(
    "template",
    [
        "a photo of embedding:{} by hugsy",
        "hugsy, (embedding:{}:1.2), a dog",
        "(embedding:{})hugsy on a beach",
    ],
)
def test_an_embedding_whose_name_holds_a_concept_word_stays_the_users_embedding(
    clip, concept_clip, user_embeddings, template
):
    """The concept word inside an `embedding:` name is part of the name: the host's textual inversion
    is used there (before: the concept's embedding, or none), and the concept word outside it still
    becomes the concept."""
    teddy = tokens(clip, "teddy")[1][0]
    for name in user_embeddings:
        text = template.format(name)
        want = tokens(
            clip, text.replace(" hugsy", " teddy").replace("hugsy,", "teddy,").replace(")hugsy", ")teddy")
        )
        assert sum(isinstance(t[0], torch.Tensor) for t in want) == 2  # the host found the file
        assert concept_tokens(tokens(concept_clip, text), want, teddy) == 1, text


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
