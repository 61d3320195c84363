"""The patch in the host's hard cases: other models, fine-tunes, LoRA, low precision, offloading."""

import dataclasses
import logging
import sys

import numpy as np
import pytest
import safetensors.torch
import torch

from harness.fixture_checkpoint import fixture_checkpoint
from harness.graph import Graph
from harness.perfusion_graphs import ConceptUse, generate_prompt, with_model_patch
from perfusion_core.concept_file import load_concept
from perfusion_core.concept_writer import save_concept


def perfusion_dir(host):
    return host.base_dir / "models" / "perfusion"


def image(host, prompt) -> np.ndarray:
    result = host.run(prompt).raise_for_error()
    return host.images(result)[0]


@pytest.fixture(scope="module")
def hugsy(comfy_host, trained_concepts):
    return load_concept(perfusion_dir(comfy_host) / trained_concepts["hugsy"])


def write_variant(host, concept, name: str, **changes) -> str:
    save_concept(dataclasses.replace(concept, **changes), perfusion_dir(host) / name, overwrite=True)
    return name


@pytest.mark.parametrize(
    "variant",
    ["other_layers", "other_widths", "other_text_encoder", "other_family"],
)
def test_concept_for_another_model_is_refused_naming_file_and_model(
    comfy_host, tiny_ckpt_name, hugsy, variant
):
    targets = hugsy.v_targets
    if variant == "other_layers":
        changes = {
            "v_targets": {k.replace("input_blocks.1", "input_blocks.4"): v for k, v in targets.items()}
        }
    elif variant == "other_widths":
        changes = {"v_targets": {k: torch.zeros(640) for k in targets}}
    elif variant == "other_text_encoder":
        changes = {
            name: torch.ones(1024) for name in ("token_embedding", "i_star", "u", "superclass_encoding")
        }
        changes["info"] = dataclasses.replace(hugsy.info, text_encoders=(("h", 1024),))
    else:
        changes = {"info": dataclasses.replace(hugsy.info, model_family="SDXL")}
    name = write_variant(comfy_host, hugsy, f"mismatch_{variant}.safetensors", **changes)
    result = comfy_host.run(generate_prompt(tiny_ckpt_name, [ConceptUse(name)]))
    assert result.error_kind == "execution", result.error_text
    assert name in result.error_text and "trained for" in result.error_text
    # the host keeps serving
    assert comfy_host.run(generate_prompt(tiny_ckpt_name, positive="a dog")).success


def test_concept_on_a_fine_tune_loads_with_a_warning_naming_both(comfy_host, trained_concepts, caplog):
    finetune = comfy_host.add_checkpoint(fixture_checkpoint("tiny", seed=1))
    with caplog.at_level(logging.WARNING):
        result = comfy_host.run(generate_prompt(finetune, [ConceptUse(trained_concepts["hugsy"])]))
    assert result.success, result.error_text
    warnings = [r.getMessage() for r in caplog.records if trained_concepts["hugsy"] in r.getMessage()]
    assert warnings, [r.getMessage() for r in caplog.records]
    assert hugsy_fingerprint(comfy_host, trained_concepts)[:16] in warnings[0]


def hugsy_fingerprint(host, trained_concepts) -> str:
    return load_concept(perfusion_dir(host) / trained_concepts["hugsy"]).info.encoder_fingerprint


@pytest.fixture(scope="module")
def lora_name(comfy_host, tiny_ckpt_name, perfusion_pack, tmp_path_factory):
    """A random rank-4 LoRA on every cross-attention K/V and self-attention Q of the fixture."""
    host_nodes = sys.modules["nodes"]
    with torch.inference_mode():
        model = host_nodes.CheckpointLoaderSimple().load_checkpoint(tiny_ckpt_name)[0]
    g = torch.Generator().manual_seed(0)
    sd = {}
    for layer in perfusion_pack.nodes.model_patch.cross_attention_layers(model):
        for proj in (layer.key_path, layer.value_path, layer.name.replace("attn2", "attn1") + ".to_q"):
            weight = model.get_model_object(proj).weight
            sd[f"{proj}.lora_up.weight"] = torch.randn(weight.shape[0], 4, generator=g) * 0.2
            sd[f"{proj}.lora_down.weight"] = torch.randn(4, weight.shape[1], generator=g) * 0.2
    path = tmp_path_factory.mktemp("lora") / "fixture_lora.safetensors"
    safetensors.torch.save_file(sd, str(path))
    return comfy_host.add_file("loras", path)


def with_lora(prompt: Graph, lora: str, after_concepts: bool) -> Graph:
    inputs = {"lora_name": lora, "strength_model": 1.0, "strength_clip": 1.0}
    return with_model_patch(prompt, "LoraLoader", inputs, after_concepts=after_concepts, patches_clip=True)


def test_lora_before_or_after_the_concept_gives_the_same_image(
    comfy_host, tiny_ckpt_name, trained_concepts, lora_name
):
    prompt = generate_prompt(
        tiny_ckpt_name, [ConceptUse(trained_concepts["hugsy"])], positive="hugsy in a field"
    )
    before = image(comfy_host, with_lora(prompt, lora_name, after_concepts=False))
    after = image(comfy_host, with_lora(prompt, lora_name, after_concepts=True))
    concept_only = image(comfy_host, prompt)
    np.testing.assert_allclose(before, after, atol=2 / 255)
    assert np.abs(before - concept_only).mean() > 1e-3  # the LoRA is in force under the concept


def test_cross_attention_weight_patches_before_or_after_the_concept_give_the_same_image(
    comfy_host, tiny_ckpt_name, trained_concepts
):
    """Another node's weight patches on the same to_k/to_v (UNetCrossAttentionMultiply) are in force
    under the edit whichever comes first: the edit reads W through the host's own projection."""
    prompt = generate_prompt(
        tiny_ckpt_name, [ConceptUse(trained_concepts["hugsy"])], positive="hugsy in a field"
    )
    scales = {"q": 1.0, "k": 1.4, "v": 0.6, "out": 1.0}
    before = image(
        comfy_host, with_model_patch(prompt, "UNetCrossAttentionMultiply", scales, after_concepts=False)
    )
    after = image(
        comfy_host, with_model_patch(prompt, "UNetCrossAttentionMultiply", scales, after_concepts=True)
    )
    np.testing.assert_allclose(before, after, atol=2 / 255)
    assert np.abs(before - image(comfy_host, prompt)).mean() > 1e-3


@pytest.mark.parametrize("lock", ["local", "global"])
def test_other_attention_patches_run_with_the_concept(comfy_host, tiny_ckpt_name, trained_concepts, lock):
    """Token merging (TomePatchModel) patches every self-attention's input and output; it and the
    concept (with global lock's own attn2 patch) both act in one run."""
    prompt = generate_prompt(
        tiny_ckpt_name, [ConceptUse(trained_concepts["hugsy"], key_lock=lock)], positive="hugsy in a field"
    )
    guided = image(
        comfy_host, with_model_patch(prompt, "TomePatchModel", {"ratio": 0.5}, after_concepts=True)
    )
    plain_guided = image(
        comfy_host,
        with_model_patch(
            generate_prompt(tiny_ckpt_name, positive="hugsy in a field"),
            "TomePatchModel",
            {"ratio": 0.5},
            after_concepts=True,
        ),
    )
    assert np.isfinite(guided).all()
    assert np.abs(guided - image(comfy_host, prompt)).mean() > 1e-3  # token merging acts
    assert np.abs(guided - plain_guided).mean() > 1e-3  # and so does the concept


@pytest.fixture(scope="module")
def loaded(comfy_host, tiny_ckpt_name):
    return fixture_checkpoint("tiny")


def sample_latent(model, clip, text: str, hooks=None) -> torch.Tensor:
    """A short sampling run; `hooks` (HOOKS) go on the positive prompt, as 'Cond Set Props' puts them."""
    host_nodes = sys.modules["nodes"]
    with torch.inference_mode():
        (pos,) = host_nodes.CLIPTextEncode().encode(clip, text)
        if hooks is not None:
            set_props = host_nodes.NODE_CLASS_MAPPINGS["ConditioningSetProperties"]()
            (pos,) = set_props.set_properties(pos, 1.0, "default", hooks=hooks)
        (neg,) = host_nodes.CLIPTextEncode().encode(clip, "")
        (latent,) = host_nodes.EmptyLatentImage().generate(64, 64, 1)
        return host_nodes.common_ksampler(model, 3, 2, 7.0, "euler", "normal", pos, neg, latent)[0]["samples"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float8_e4m3fn])
def test_low_precision_weights_give_the_fp32_result_closely(perfusion_pack, loaded, hugsy, dtype):
    import comfy.sd

    apply = perfusion_pack.nodes.apply.apply_concept
    outputs = {}
    for d in (torch.float32, dtype):
        with torch.inference_mode():
            model, clip = comfy.sd.load_checkpoint_guess_config(str(loaded), model_options={"dtype": d})[:2]
        plain = sample_latent(model, clip, "hugsy on a beach")
        patched_model, patched_clip = apply(model, clip, hugsy, 0.5, 0.15, "local", "test")
        outputs[d] = (plain, sample_latent(patched_model, patched_clip, "hugsy on a beach"))
    (plain32, patched32), (plain_low, patched_low) = outputs[torch.float32], outputs[dtype]
    assert torch.isfinite(patched_low).all()
    effect = (patched32 - plain32).abs().mean()
    precision_error = (patched_low - patched32).abs().mean()
    model_error = (plain_low - plain32).abs().mean()
    print(
        f"{dtype}: concept effect {effect:.4f}, patched error {precision_error:.4f}, unpatched error {model_error:.4f}"
    )
    assert precision_error < max(0.5 * effect, 2 * model_error)


def test_low_vram_partial_load_gives_identical_outputs(perfusion_pack, loaded, hugsy):
    import comfy.model_management
    import comfy.sd

    with torch.inference_mode():
        model, clip = comfy.sd.load_checkpoint_guess_config(str(loaded))[:2]
    patched, pclip = perfusion_pack.nodes.apply.apply_concept(model, clip, hugsy, 0.5, 0.15, "local", "test")
    host_nodes = sys.modules["nodes"]
    with torch.inference_mode():
        (cond,) = host_nodes.CLIPTextEncode().encode(pclip, "a photo of hugsy")
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([3.0])
    outs = []
    for lowvram in (0, 1):
        comfy.model_management.unload_all_models()
        with torch.inference_mode():
            patched.patch_model(device_to=torch.device("cpu"), lowvram_model_memory=lowvram)
            outs.append(patched.model.apply_model(x, sigma, c_crossattn=cond[0][0]))
            patched.unpatch_model(device_to=torch.device("cpu"))
    torch.testing.assert_close(outs[0], outs[1])


def test_inputs_are_never_modified(perfusion_pack, loaded, hugsy):
    import comfy.sd

    with torch.inference_mode():
        model, clip = comfy.sd.load_checkpoint_guess_config(str(loaded))[:2]
    patches_before, tokenizer_before = dict(model.object_patches), clip.tokenizer
    tokens_before = clip.tokenize("a photo of hugsy")
    perfusion_pack.nodes.apply.apply_concept(model, clip, hugsy, 0.7, 0.15, "global", "test")
    assert model.object_patches == patches_before and not model.wrappers.get("diffusion_model")
    assert clip.tokenizer is tokenizer_before
    assert clip.tokenize("a photo of hugsy") == tokens_before


def test_rows_kept_for_a_sampling_run_are_renewed_for_the_next(perfusion_pack, loaded, hugsy, lora_name):
    """W i* is computed once per sampling run: a LoRA added after the concept (same projection
    objects, other weights) must be in force in its run and gone in the next run without it."""
    import comfy.sd

    host_nodes = sys.modules["nodes"]
    apply = perfusion_pack.nodes.apply.apply_concept
    with torch.inference_mode():
        model, clip = comfy.sd.load_checkpoint_guess_config(str(loaded))[:2]
    patched, pclip = apply(model, clip, hugsy, 0.5, 0.15, "local", "test")
    lora_after = host_nodes.LoraLoader().load_lora(patched, pclip, lora_name, 1.0, 0.0)[0]
    lora_model = host_nodes.LoraLoader().load_lora(model, clip, lora_name, 1.0, 0.0)[0]
    lora_before = apply(lora_model, clip, hugsy, 0.5, 0.15, "local", "test")[0]
    text = "hugsy on a beach"
    first = sample_latent(patched, pclip, text)
    projections = [p for p in patched.object_patches.values() if hasattr(p, "output_rows")]
    assert projections and all(p._rows is not None for p in projections)  # reused within the run
    with_lora = sample_latent(lora_after, pclip, text)
    again = sample_latent(patched, pclip, text)
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    torch.testing.assert_close(with_lora, sample_latent(lora_before, pclip, text), rtol=1e-4, atol=1e-4)
    assert (with_lora - first).abs().mean() > 1e-3


def test_run_marker_generations_never_span_a_nested_run_or_autograd(perfusion_pack):
    run = perfusion_pack.nodes.sampling_run.SamplingRun()
    assert not run.active
    with torch.inference_mode(), run.marked():
        outer = run.generation
        assert run.active
        with run.marked():
            inner = run.generation
            assert inner != outer
        assert run.active and run.generation not in (outer, inner)  # the outer run recomputes
    assert not run.active
    with torch.enable_grad(), run.marked():
        assert not run.active  # a training loop: weights may move every step


def test_runs_with_weight_hooks_reuse_nothing(perfusion_pack, loaded, hugsy, lora_name, monkeypatch):
    """A LoRA hook on the positive prompt gives cond and uncond different weights within one run:
    rows kept from one would be wrong for the other, so such runs are not marked."""
    import comfy.sd

    host_nodes = sys.modules["nodes"]
    with torch.inference_mode():
        model, clip = comfy.sd.load_checkpoint_guess_config(str(loaded))[:2]
    patched, pclip = perfusion_pack.nodes.apply.apply_concept(model, clip, hugsy, 0.5, 0.15, "local", "test")
    make_hook = host_nodes.NODE_CLASS_MAPPINGS["CreateHookLoraModelOnly"]()
    (hooks,) = make_hook.create_hook_model_only(lora_name, 1.0)
    hooked = sample_latent(patched, pclip, "hugsy on a beach", hooks)
    assert (hooked - sample_latent(patched, pclip, "hugsy on a beach")).abs().mean() > 1e-3  # the hook acts
    run_class = perfusion_pack.nodes.sampling_run.SamplingRun
    monkeypatch.setattr(run_class, "active", property(lambda self: False))  # every call recomputes
    torch.testing.assert_close(
        hooked, sample_latent(patched, pclip, "hugsy on a beach", hooks), rtol=0, atol=0
    )
