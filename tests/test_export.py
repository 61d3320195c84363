"""Export for other tools: the rank-1 LoRA's algebra, and both files in a stock ComfyUI graph
(LoraLoader, embedding:NAME) through the real executor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.graph import Graph
from harness.perfusion_graphs import generate_prompt, with_model_patch
from perfusion_core.concept import Concept, ConceptInfo
from perfusion_core.export import embedding_tensors, rank1_updates

D, LAYERS = 24, {"diffusion_model.a.attn2": 8, "diffusion_model.b.attn2": 16}


def random_concept(seed: int = 0, **info) -> tuple[Concept, dict]:
    g = torch.Generator().manual_seed(seed)
    c_inv = torch.randn(D, D, generator=g, dtype=torch.float64)
    c_inv = c_inv @ c_inv.T + D * torch.eye(D, dtype=torch.float64)  # a covariance's inverse
    i_star = torch.randn(D, generator=g, dtype=torch.float64)
    concept = Concept(
        info=ConceptInfo("zorp", "ball", "SD15", "x", **info),
        token_embedding=torch.randn(D, generator=g),
        i_star=i_star.float(),
        u=(c_inv @ i_star).float(),
        superclass_encoding=torch.randn(D, generator=g),
        v_targets={name: torch.randn(w, generator=g) for name, w in LAYERS.items()},
    )
    weights = {
        name: (torch.randn(w, D, generator=g), torch.randn(w, D, generator=g)) for name, w in LAYERS.items()
    }
    return concept, weights


def test_the_lora_gives_the_trained_targets_at_i_star_and_leaves_orthogonal_encodings_alone():
    concept, weights = random_concept()
    updates = rank1_updates(concept, weights)
    assert set(updates) == {f"{layer}.to_{kind}" for layer in LAYERS for kind in "kv"}
    other = torch.randn(D)
    other -= (other @ concept.u) / (concept.u @ concept.u) * concept.u  # C⁻¹-orthogonal to i*
    for layer, (w_k, w_v) in weights.items():
        for kind, w, target in (
            ("v", w_v, concept.v_targets[layer]),
            ("k", w_k, w_k @ concept.superclass_encoding),
        ):
            up, down = updates[f"{layer}.to_{kind}"]
            edited = w + torch.outer(up, down)
            torch.testing.assert_close(edited @ concept.i_star, target, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(edited @ other, w @ other, rtol=1e-4, atol=1e-4)


def test_a_concept_trained_without_the_key_lock_exports_no_key_edit():
    concept, weights = random_concept(training_settings={"key_lock": "off"})
    assert {p.rsplit(".", 1)[1] for p in rank1_updates(concept, weights)} == {"to_v"}


def test_a_model_without_the_concepts_layers_is_refused_by_name():
    concept, weights = random_concept()
    del weights["diffusion_model.b.attn2"]
    with pytest.raises(ValueError, match="diffusion_model.b.attn2"):
        rank1_updates(concept, weights)


def test_the_embedding_is_one_vector_per_text_encoder():
    concept, _ = random_concept()
    assert {k: tuple(v.shape) for k, v in embedding_tensors(concept).items()} == {"emb_params": (1, D)}
    sdxl, _ = random_concept(text_encoders=(("l", 8), ("g", 16)))
    parts = embedding_tensors(sdxl)
    assert {k: tuple(v.shape) for k, v in parts.items()} == {"clip_l": (1, 8), "clip_g": (1, 16)}
    torch.testing.assert_close(torch.cat([parts["clip_l"], parts["clip_g"]], 1)[0], sdxl.token_embedding)


def export_prompt(ckpt_name: str, concept_file: str, name: str, overwrite: bool) -> Graph:
    g = Graph()
    ckpt = g.checkpoint(ckpt_name)
    concept = g.add("PerfusionConceptFile", concept_name=concept_file)
    g.add("PerfusionExportConcept", model=ckpt[0], concept=concept, name=name, overwrite=overwrite)
    return g


def stock_image(host, ckpt_name: str, text: str, lora: str | None = None) -> np.ndarray:
    """The plain txt2img graph, with LoraLoader between the checkpoint and the rest when given."""
    prompt = generate_prompt(ckpt_name, positive=text)
    if lora is not None:
        inputs = {"lora_name": lora, "strength_model": 1.0, "strength_clip": 1.0}
        prompt = with_model_patch(prompt, "LoraLoader", inputs, patches_clip=True)
    (img,) = host.images(host.run(prompt).raise_for_error())
    return img.astype(np.float64)


def test_exported_files_load_in_a_stock_graph_and_change_the_image(
    comfy_host, tiny_ckpt_name, trained_concepts
):
    result = comfy_host.run(
        export_prompt(tiny_ckpt_name, trained_concepts["hugsy"], "", True)
    ).raise_for_error()
    models = comfy_host.base_dir / "models"
    lora, embedding = (
        models / "loras" / "hugsy_perfusion.safetensors",
        models / "embeddings" / "hugsy_perfusion.safetensors",
    )
    assert lora.is_file() and embedding.is_file(), result
    with_embedding = stock_image(comfy_host, tiny_ckpt_name, "a photo of embedding:hugsy_perfusion")
    # A name the host cannot find is dropped from the prompt: the same image as no embedding at all.
    missing = stock_image(comfy_host, tiny_ckpt_name, "a photo of embedding:no_such_embedding")
    both = stock_image(comfy_host, tiny_ckpt_name, "a photo of embedding:hugsy_perfusion", lora=lora.name)
    print(
        f"mean |embedding - missing| {np.abs(with_embedding - missing).mean():.2f}, "
        f"mean |lora + embedding - embedding| {np.abs(both - with_embedding).mean():.2f} (0-1)"
    )
    assert np.abs(with_embedding - missing).mean() > 0.01
    assert np.abs(both - with_embedding).mean() > 0.01


def test_exporting_over_existing_files_is_refused_and_keeps_them(
    comfy_host, tiny_ckpt_name, trained_concepts
):
    comfy_host.run(
        export_prompt(tiny_ckpt_name, trained_concepts["zorbo"], "zorbo_keep", True)
    ).raise_for_error()
    lora = comfy_host.base_dir / "models" / "loras" / "zorbo_keep.safetensors"
    before = lora.read_bytes()
    comfy_host.reset_cache()
    result = comfy_host.run(export_prompt(tiny_ckpt_name, trained_concepts["hugsy"], "zorbo_keep", False))
    assert "already exists" in result.error_text and "overwrite" in result.error_text
    assert lora.read_bytes() == before
