"""Concepts on the other UNet families: SDXL (two text encoders, pooled output) and SD2.x (v-prediction).

The SDXL fixture is the smallest layout ComfyUI 0.3.75 detects as SDXL (31 cross-attention layers,
320/640 wide, context 2048 = CLIP-L 768 + OpenCLIP-bigG 1280); the SD2.x one is the OpenCLIP-H
fixture. Both are random weights: these tests check mechanics, not image quality.
"""

import sys

import pytest
import torch

from harness.fixture_checkpoint import fixture_checkpoint
from harness.graph import Graph
from harness.perfusion_graphs import ConceptUse, generate_prompt, resume_from, train_prompt
from perfusion_core.concept_file import load_concept, read_concept_metadata
from perfusion_core.training_job import TrainingJob
from tests.conftest import CONCEPTS, train_test_concepts

SDXL_ENCODERS = (("l", 768), ("g", 1280))
WORDS = {word: superclass for word, superclass, _ in CONCEPTS.values()}


def load(name: str):
    """(MODEL, CLIP, VAE) as CheckpointLoaderSimple gives them."""
    with torch.inference_mode():
        return sys.modules["nodes"].CheckpointLoaderSimple().load_checkpoint(name)[:3]


@pytest.fixture(scope="module")
def sdxl(comfy_host):
    yield comfy_host.add_checkpoint(fixture_checkpoint("sdxl"))
    # ~5 GB in fp32 (bigG): let the next modules (and the HTTP server beside us) have the memory back
    comfy_host.reset_cache()
    comfy_host.unload_all()


@pytest.fixture(scope="module")
def sdxl_models(sdxl):
    return load(sdxl)


@pytest.fixture(scope="module")
def sdxl_concepts(comfy_host, sdxl, toy_images) -> dict[str, str]:
    """Both test concepts trained apart on the SDXL fixture (3 steps, 64 px) and saved."""
    return train_test_concepts(comfy_host, sdxl, toy_images, "sdxl_", steps=3, covariance_prompts=64)


def concept_path(host, name):
    return host.base_dir / "models" / "perfusion" / name


def test_fixture_is_detected_as_sdxl_with_two_text_encoders(perfusion_pack, sdxl_models):
    model, clip, _ = sdxl_models
    nodes = perfusion_pack.nodes
    assert type(model.model.model_config).__name__ == "SDXL"
    layers = nodes.model_patch.served_layers(model, clip)
    assert len(layers) == 31 and {layer.context_dim for layer in layers} == {2048}
    assert {layer.width for layer in layers} == {320, 640}
    assert nodes.text_encoder.encoder_layout(clip) == SDXL_ENCODERS
    assert nodes.text_encoder.encoder_layer(clip) == -2  # both encoders read the penultimate layer


def test_sdxl_concept_file_records_both_encoders(comfy_host, sdxl_concepts):
    for word, name in sdxl_concepts.items():
        meta = read_concept_metadata(concept_path(comfy_host, name))
        assert meta.format_version == "2" and meta.info.text_encoders == SDXL_ENCODERS
        assert meta.info.model_family == "SDXL" and meta.encoder_width == 2048 and len(meta.layers) == 31
        concept = load_concept(concept_path(comfy_host, name))
        assert concept.word == word and concept.token_embedding.shape == (2048,)


def dense_reference(weight, concepts, targets, beta, tau, e):
    """h(e) = W (e − Σ c_j(e) i*_j) + Σ g_j(e) o*_j in float64, written out (docs/method.md §3-4)."""
    i_star = torch.stack([c.i_star for c in concepts]).double()
    u = torch.stack([c.u for c in concepts]).double()
    m = u @ i_star.T
    s = e @ u.T
    gate = torch.sigmoid((s / torch.diagonal(m) - beta) / tau)
    projected = e - (s @ torch.linalg.inv(m).T) @ i_star
    return projected @ weight.T + gate @ targets


def test_two_sdxl_concepts_apply_jointly_and_match_the_dense_reference(
    comfy_host, perfusion_pack, sdxl_models, sdxl_concepts
):
    model, clip, _ = sdxl_models
    nodes = perfusion_pack.nodes
    concepts = [load_concept(concept_path(comfy_host, sdxl_concepts[w])) for w in WORDS]
    patched, pclip = model, clip
    for concept, beta in zip(concepts, (0.6, 0.7), strict=True):
        patched, pclip = nodes.apply.apply_concept(patched, pclip, concept, beta, 0.15, "local", concept.word)
    g = torch.Generator().manual_seed(0)
    beta, tau = torch.tensor([0.6, 0.7], dtype=torch.float64), torch.tensor([0.15, 0.15], dtype=torch.float64)
    worst = 0.0
    for layer in nodes.model_patch.cross_attention_layers(model):
        # Inputs near each concept's i* (gates open) and random ones (gates closed).
        e = torch.cat(
            [
                torch.stack([c.i_star for c in concepts]) + 0.01 * torch.randn(2, 2048, generator=g),
                torch.randn(3, 2048, generator=g) * concepts[0].i_star.norm() / 2048**0.5,
            ]
        )[None]
        for kind, path in (("k", layer.key_path), ("v", layer.value_path)):
            module = patched.get_model_object(path)
            weight = module.weight.double()
            if kind == "k":
                targets = torch.stack([c.superclass_encoding for c in concepts]).double() @ weight.T
            else:
                targets = torch.stack([c.v_targets[layer.name] for c in concepts]).double()
            with torch.no_grad():
                got = patched.get_model_object(f"{path}.forward")(e.float()).double()
            want = dense_reference(weight, concepts, targets, beta, tau, e.double())
            err = ((got - want).abs().max() / (1 + want.abs().max())).item()
            worst = max(worst, err)
    assert worst < 1e-4, worst
    assert nodes.text_encoder.concept_words(pclip).keys() == set(WORDS)


def test_two_sdxl_concepts_generate_through_the_executor(comfy_host, sdxl, sdxl_concepts):
    uses = [ConceptUse(sdxl_concepts[w]) for w in WORDS]
    text = "a photo of hugsy and zorbo"
    both = comfy_host.images(comfy_host.run(generate_prompt(sdxl, uses, positive=text)).raise_for_error())[0]
    plain = comfy_host.images(comfy_host.run(generate_prompt(sdxl, positive=text)).raise_for_error())[0]
    assert both.shape == plain.shape == (64, 64, 3)
    assert (both.astype(int) - plain.astype(int)).any()


def test_sdxl_resume_with_previews_and_global_key_lock(comfy_host, sdxl, sdxl_concepts, toy_images):
    """What SD1.5 concepts do carries over: resume a saved concept with previews on (the last one is
    what generation with the result gives: same embeddings, same superclass pooled vector), then
    generate with the global key-lock (the superclass prompt's keys)."""
    from tests.test_previews import PROMPTS, preview_settings, with_generation

    prompt = train_prompt(
        sdxl,
        toy_images["hugsy"],
        steps=1,
        covariance_prompts=64,
        save_name="sdxl_hugsy_resumed",
        extra=preview_settings(1),
    )
    trainer = resume_from(prompt, sdxl_concepts["hugsy"])
    shown = prompt.preview(trainer[3])  # the trainer's previews
    before = set(prompt.nodes("PreviewImage"))
    prompt = with_generation(prompt, PROMPTS[0].format("hugsy"), seed=0)
    (generation,) = [node for node in prompt.nodes("PreviewImage") if node not in before]
    result = comfy_host.run(prompt).raise_for_error()
    previews = comfy_host.images(result, shown.id)
    assert len(previews) == 2 * len(PROMPTS)  # steps 0 and 1
    (generated,) = comfy_host.images(result, generation.id)
    assert abs(previews[-len(PROMPTS)].astype(int) - generated.astype(int)).max() <= 1
    resumed = load_concept(concept_path(comfy_host, "sdxl_hugsy_resumed.safetensors"))
    assert resumed.info.steps == 4 and resumed.info.text_encoders == SDXL_ENCODERS
    text = "a photo of hugsy on the beach"
    images = [
        comfy_host.images(
            comfy_host.run(
                generate_prompt(
                    sdxl, [ConceptUse("sdxl_hugsy_resumed.safetensors", 0.5, key_lock=lock)], positive=text
                )
            ).raise_for_error()
        )[0]
        for lock in ("global", "local")
    ]
    assert (images[0].astype(int) - images[1].astype(int)).any()


def encode(clip, text):
    with torch.inference_mode():
        return clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)


def test_pooled_output_is_the_superclass_prompts_and_other_prompts_are_unchanged(
    comfy_host, perfusion_pack, sdxl_models, sdxl_concepts
):
    """SDXL's pooled vector (into `y`) is keyed on the superclass, as K is: the concept word acts only
    through the cross-attention edit and its sequence encoding."""
    model, clip, _ = sdxl_models
    concept = load_concept(concept_path(comfy_host, sdxl_concepts["hugsy"]))
    _, pclip = perfusion_pack.nodes.apply.apply_concept(model, clip, concept, 0.7, 0.15, "local", "hugsy")
    for text in ("a photo of a dog on the beach", "", "hugsyish teddy, a red car"):
        cond, pooled = encode(clip, text)
        pcond, ppooled = encode(pclip, text)
        assert torch.equal(cond, pcond) and torch.equal(pooled, ppooled), text
    cond, pooled = encode(pclip, "a photo of hugsy on the beach")
    super_cond, super_pooled = encode(clip, "a photo of teddy on the beach")
    assert torch.equal(pooled, super_pooled)
    assert not torch.equal(cond, super_cond)  # the word's own encoding is the learned one


def test_training_previews_encode_with_the_superclass_pooled_vector(perfusion_pack, sdxl_models, toy_pixels):
    """Training reads the word through its trainable CLIP; previews encode as generation will."""
    from perfusion_core.training import TrainingConfig

    model, clip, vae = sdxl_models
    config = TrainingConfig(steps=1, batch_size=1, resolution=64, templates=("a photo of a {}",))
    text = "a photo of hugsy on the beach"
    _, super_pooled = encode(clip, "a photo of teddy on the beach")
    with torch.inference_mode(False), torch.enable_grad():
        job = TrainingJob("hugsy", "teddy", toy_pixels, config, covariance_prompts=64)
        with perfusion_pack.nodes.trainer.open_run(model, clip, vae, job) as run:
            # superclass-initialised embeddings: the word's pooled vector differs only by its position
            with torch.no_grad():
                for p in run.state.token_embeddings:
                    p.add_(0.05)
            assert torch.equal(encode(run.preview_clip, text)[1], super_pooled)
            assert not torch.equal(encode(run.clip, text)[1], super_pooled)


def test_concept_files_are_refused_across_families_naming_both(
    comfy_host, tiny_ckpt_name, sdxl, sdxl_concepts
):
    sd15 = comfy_host.run(generate_prompt(tiny_ckpt_name, [ConceptUse(sdxl_concepts["hugsy"])]))
    assert sd15.error_kind == "execution"
    assert (
        sdxl_concepts["hugsy"] in sd15.error_text and "SDXL" in sd15.error_text and "SD15" in sd15.error_text
    )


def test_resuming_an_sd15_concept_on_sdxl_is_refused_naming_both(
    comfy_host, sdxl, trained_concepts, toy_images
):
    prompt = train_prompt(sdxl, toy_images["hugsy"], steps=1, covariance_prompts=64)
    resume_from(prompt, trained_concepts["hugsy"])
    result = comfy_host.run(prompt)
    assert result.error_kind == "execution"
    assert "'resume' was trained for SD15" in result.error_text and "SDXL" in result.error_text, (
        result.error_text
    )


def test_an_sd15_concept_is_refused_by_sdxl_naming_both(comfy_host, sdxl, trained_concepts):
    result = comfy_host.run(generate_prompt(sdxl, [ConceptUse(trained_concepts["hugsy"])]))
    assert result.error_kind == "execution"
    text = result.error_text
    assert trained_concepts["hugsy"] in text and "SDXL" in text and "SD15" in text
    assert comfy_host.run(generate_prompt(sdxl, positive="a dog")).success  # the host keeps serving


# SD2.x --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sd2(comfy_host) -> str:
    return comfy_host.add_checkpoint(fixture_checkpoint("tiny", context_dim=1024))


def with_v_prediction(prompt: Graph) -> Graph:
    """Inserts ModelSamplingDiscrete (v_prediction) after the checkpoint, as SD2 768-v users do."""
    model = prompt.node("CheckpointLoaderSimple")[0]
    readers = [node["inputs"] for node in prompt.values()]
    sampling = prompt.add("ModelSamplingDiscrete", model=model, sampling="v_prediction", zsnr=False)
    for inputs in readers:
        for key, value in inputs.items():
            if value == model:
                inputs[key] = sampling[0]
    return prompt


def test_sd2_v_prediction_concept_trains_and_applies(comfy_host, sd2, toy_images):
    prompt = with_v_prediction(
        train_prompt(sd2, toy_images["hugsy"], steps=2, covariance_prompts=64, save_name="sd2_hugsy")
    )
    comfy_host.run(prompt).raise_for_error()
    meta = read_concept_metadata(concept_path(comfy_host, "sd2_hugsy.safetensors"))
    assert meta.info.model_family == "SD20" and meta.info.text_encoders == (("h", 1024),)
    generate = with_v_prediction(generate_prompt(sd2, [ConceptUse("sd2_hugsy.safetensors")]))
    assert comfy_host.images(comfy_host.run(generate).raise_for_error())[0].shape == (64, 64, 3)


def test_v_prediction_training_loss_is_the_v_objective(perfusion_pack, sd2, toy_pixels):
    """With a v-prediction sampling patch the trainer's target comes from it: its loss equals
    mean((v̂ − v)²) / (1 + σ²) with v = (ε − σ x0) / √(1 + σ²), computed here from the raw UNet."""
    import comfy.model_sampling
    import comfy_extras.nodes_model_advanced as advanced

    from perfusion_core.training import BatchPlan, TrainingConfig

    model, clip, vae = load(sd2)
    (vmodel,) = advanced.ModelSamplingDiscrete().patch(model, "v_prediction", False)
    config = TrainingConfig(steps=1, batch_size=2, resolution=64, templates=("a photo of a {}",))
    trainer = perfusion_pack.nodes.trainer
    with torch.inference_mode(False), torch.enable_grad():
        job = TrainingJob("hugsy", "teddy", toy_pixels, config, covariance_prompts=64)
        with trainer.open_run(vmodel, clip, vae, job) as run:
            assert isinstance(run.sampling, comfy.model_sampling.V_PREDICTION)
            assert run.model.model.model_sampling is run.sampling  # what apply_model uses
            batch = BatchPlan([0, 1], [False, False], ["a photo of a {}"] * 2, torch.tensor([0.3, 0.7]))
            noise = run.noise(2, torch.Generator().manual_seed(0))
            with torch.no_grad():
                loss = float(run.loss(batch, noise)[0])
                x0 = run.latents[[0, 1]]
                sigma = torch.tensor([float(run.sampling.percent_to_sigma(p)) for p in (0.3, 0.7)])
                s = sigma[:, None, None, None]
                x_t = x0 + s * noise
                cond, _ = run.encoder(batch.templates)
                unet = run.model.model
                raw = unet.diffusion_model(
                    x_t / (s**2 + 1) ** 0.5, unet.model_sampling.timestep(sigma).float(), context=cond
                ).float()
                v = (noise - s * x0) / (1 + s**2) ** 0.5
                reference = float((((raw - v) ** 2) / (1 + s**2)).mean())
    assert loss == pytest.approx(reference, rel=1e-4)


def test_a_format_1_file_keeps_loading_and_gives_the_same_image(comfy_host, tiny_ckpt_name, trained_concepts):
    """Files written before SDXL support (format 1: one text encoder, no `text_encoders`) apply as the
    same concept does in format 2."""
    import dataclasses

    from perfusion_core.concept_writer import save_concept

    concept = load_concept(concept_path(comfy_host, trained_concepts["hugsy"]))
    old = dataclasses.replace(concept, info=dataclasses.replace(concept.info, text_encoders=None))
    save_concept(old, concept_path(comfy_host, "format1_hugsy.safetensors"), overwrite=True)
    assert read_concept_metadata(concept_path(comfy_host, "format1_hugsy.safetensors")).format_version == "1"
    images = [
        comfy_host.images(comfy_host.run(generate_prompt(tiny_ckpt_name, [ConceptUse(f)])).raise_for_error())[
            0
        ]
        for f in ("format1_hugsy.safetensors", trained_concepts["hugsy"])
    ]
    assert (images[0] == images[1]).all()


@pytest.fixture(scope="module")
def mmdit_name(comfy_host, tmp_path_factory) -> str:
    """A tiny random SD3 (MMDiT) diffusion model file, built from ComfyUI's own class."""
    import comfy.ops
    import safetensors.torch
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT

    with torch.device("meta"):
        model = MMDiT(
            patch_size=2,
            in_channels=16,
            depth=2,
            adm_in_channels=64,
            context_embedder_config={
                "target": "torch.nn.Linear",
                "params": {"in_features": 64, "out_features": 128},
            },
            pos_embed_max_size=16,
            pos_embed_scaling_factor=None,
            num_patches=256,
            device="meta",
            operations=comfy.ops.disable_weight_init,
        )
    path = tmp_path_factory.mktemp("mmdit") / "tiny_sd3.safetensors"
    safetensors.torch.save_file({k: torch.zeros(v.shape) for k, v in model.state_dict().items()}, str(path))
    return comfy_host.add_file("diffusion_models", path)


def test_a_model_without_unet_cross_attention_is_refused_naming_its_type(
    comfy_host, tiny_ckpt_name, trained_concepts, mmdit_name
):
    prompt = generate_prompt(tiny_ckpt_name, [ConceptUse(trained_concepts["hugsy"])])
    unet = prompt.add("UNETLoader", unet_name=mmdit_name, weight_dtype="default")
    prompt.inputs("PerfusionConceptLoader")["model"] = unet[0]
    result = comfy_host.run(prompt)
    assert result.error_kind == "execution"
    assert "SD3" in result.error_text and "no UNet cross-attention" in result.error_text, result.error_text
    assert comfy_host.run(generate_prompt(tiny_ckpt_name, positive="a dog")).success


def test_sdxl_text_g_and_text_l_with_the_concept_word_at_different_tokens_is_refused_naming_both(
    comfy_host, perfusion_pack, sdxl_models, sdxl_concepts
):
    """CLIPTextEncodeSDXL tokenizes text_g and text_l apart, and SDXL reads both encoders' tokens side
    by side: where the word's tokens differ, no token carries the whole learned encoding (before: a
    weaker concept, silently). The same prompt in both, or the word at the same token, still works."""
    from comfy_extras.nodes_clip_sdxl import CLIPTextEncodeSDXL

    model, clip, _ = sdxl_models
    concept = load_concept(concept_path(comfy_host, sdxl_concepts["hugsy"]))
    _, pclip = perfusion_pack.nodes.apply.apply_concept(model, clip, concept, 0.7, 0.15, "local", "hugsy")

    def encode_sdxl(text_g: str, text_l: str):
        with torch.inference_mode():
            return CLIPTextEncodeSDXL.execute(pclip, 1024, 1024, 0, 0, 1024, 1024, text_g, text_l)

    encode_sdxl("a photo of hugsy", "one more of hugsy, watercolour")  # same token: other words are free
    for text_g, text_l, where in [
        ("a photo of hugsy", "hugsy", "token 4 of text_g but token 1 of text_l"),
        ("hugsy on a beach", "a beach, high detail", "token 1 of text_g but nowhere in text_l"),
    ]:
        with pytest.raises(ValueError) as error:
            encode_sdxl(text_g, text_l)
        message = str(error.value)
        assert "'hugsy'" in message and where in message and "CLIPTextEncodeSDXL" in message, message
