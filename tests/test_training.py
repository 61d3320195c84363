"""Training: through ComfyUI's executor (graphs a user would queue) and, where a test must look
inside the run, through the pack's trainer on models loaded by the host's own loader node."""

import dataclasses
import sys

import numpy as np
import pytest
import torch

from harness import training_runs
from harness.graph import Graph
from harness.perfusion_graphs import resume_from, train_prompt
from perfusion_core.concept_file import load_concept

TRAINER = "PerfusionTrainConcept"


def trainer_id(g: Graph) -> str:
    return g.node(TRAINER).id


def concept_files(host) -> set[str]:
    return {p.name for p in (host.base_dir / "models" / "perfusion").rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def base_models(comfy_host, tiny_ckpt_name):
    """(MODEL, CLIP, VAE) loaded by CheckpointLoaderSimple under inference mode, as the executor does."""
    host_nodes = sys.modules["nodes"]
    with torch.inference_mode():
        return host_nodes.CheckpointLoaderSimple().load_checkpoint(tiny_ckpt_name)[:3]


def run_trainer(pack, models, pixels, *, steps=6, seed=0, gradient_checkpointing=False, **config):
    from perfusion_core.training import TrainingConfig

    settings = {
        "batch_size": 1,
        "grad_accumulation": 1,
        "resolution": 64,
        "seed": seed,
        "steps": steps,
        **config,
    }
    cfg = TrainingConfig(templates=("a photo of a {}", "a good photo of the {}"), **settings)
    return training_runs.train(pack, models, pixels, cfg, gradient_checkpointing=gradient_checkpointing)


def test_training_in_the_executor_lowers_the_loss_and_reports_progress(
    comfy_host, tiny_ckpt_name, toy_images
):
    prompt = train_prompt(
        tiny_ckpt_name, toy_images["hugsy"], steps=10, lr_v=0.3, lr_embedding=0.02, use_mask=True
    )
    result = comfy_host.run(prompt).raise_for_error()
    before, after = result.outputs[trainer_id(prompt)]["perfusion_eval"]
    print(f"masked loss on the training images: {before:.6f} -> {after:.6f}")
    assert after < before
    progress = [d for d in result.events("progress") if d.get("node") == trainer_id(prompt)]
    assert [d["value"] for d in progress][-1] == 10 and progress[-1]["max"] == 10
    (curve,) = comfy_host.images(result, node_id=prompt.node("PreviewImage").id)
    assert curve.shape[2] == 3 and curve.std() > 0  # the loss curve preview was drawn


def test_only_embedding_and_v_targets_train_and_keys_stay_locked(perfusion_pack, base_models, toy_pixels):
    model, clip, _ = base_models
    before = {k: v.clone() for k, v in model.model.diffusion_model.state_dict().items()}
    result = run_trainer(perfusion_pack, base_models, toy_pixels, lr_v=0.1, lr_embedding=0.01)
    concept = result.concept
    te = perfusion_pack.nodes.text_encoder
    initial_embedding = te.input_embedding(clip, "teddy")
    assert not torch.equal(concept.token_embedding, initial_embedding)
    # the frozen model is bit-identical and holds no gradient state
    after = model.model.diffusion_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(not p.requires_grad and p.grad is None for p in model.model.diffusion_model.parameters())
    # u is C⁻¹ i*, stored so inference needs no covariance
    c_inv = perfusion_pack.nodes.covariance_cache.inverse_covariance(clip, 128)
    torch.testing.assert_close(concept.u, (c_inv @ concept.i_star.double()).float(), rtol=1e-4, atol=1e-5)
    # K is locked: with the gate wide open, to_k(i*) is W_K · superclass encoding for every layer
    applied = perfusion_pack.nodes.apply.apply_concept(model, clip, concept, -50.0, 0.15, "local", "test")[0]
    with torch.inference_mode():
        for layer in perfusion_pack.nodes.model_patch.cross_attention_layers(model):
            patched_k = applied.get_model_object(f"{layer.key_path}.forward")
            w_k = model.get_model_object(layer.key_path).weight.float()
            out = patched_k(concept.i_star[None, None].to(w_k.dtype))[0, 0].float()
            torch.testing.assert_close(out, w_k @ concept.superclass_encoding, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    ("grad_accumulation", "per_micro_batch", "updates"), [(1, True, 5), (2, True, 10), (2, False, 5)]
)
def test_i_star_follows_the_ema_of_the_concept_encoding(
    perfusion_pack, base_models, toy_pixels, grad_accumulation, per_micro_batch, updates
):
    """With nothing trained (lr 0), the concept encoding e is constant: after N EMA updates
    i* = m^N ī + (1 − m^N) e, with one update per micro-batch (the default) or per optimizer step."""
    model, clip, _ = base_models
    result = run_trainer(
        perfusion_pack,
        base_models,
        toy_pixels,
        steps=5,
        lr_v=0.0,
        lr_embedding=0.0,
        grad_accumulation=grad_accumulation,
        i_star_per_micro_batch=per_micro_batch,
    )
    trainer, te = perfusion_pack.nodes.trainer, perfusion_pack.nodes.text_encoder
    templates = ("a photo of a {}", "a good photo of the {}")
    superclass = trainer.superclass_encoding(clip, "teddy", templates)
    embeddings = te.split_embedding(clip, te.input_embedding(clip, "teddy"))
    encoder = trainer.PromptEncoder(
        te.clip_with_concepts(clip, [te.ConceptWord("hugsy", embeddings)]), "hugsy", embeddings
    )
    with torch.inference_mode():
        cond, positions = encoder(list(templates))
    per_template = [cond[k, p].float() for k, p in enumerate(positions)]
    # each micro-batch used one template; i* is a convex mix of ī and the two template encodings
    m = 0.99
    mix = result.concept.i_star - m**updates * superclass
    basis = torch.stack(per_template).T  # (D, 2)
    weights = torch.linalg.lstsq(basis, mix[:, None]).solution[:, 0]
    torch.testing.assert_close(basis @ weights, mix, rtol=1e-3, atol=1e-4)
    assert abs(float(weights.sum()) - (1 - m**updates)) < 1e-3


def test_same_seed_same_concept(perfusion_pack, base_models, toy_pixels):
    a = run_trainer(perfusion_pack, base_models, toy_pixels, steps=3, seed=7).concept
    b = run_trainer(perfusion_pack, base_models, toy_pixels, steps=3, seed=7).concept
    c = run_trainer(perfusion_pack, base_models, toy_pixels, steps=3, seed=8).concept
    assert torch.equal(a.token_embedding, b.token_embedding)
    assert all(torch.equal(a.v_targets[k], b.v_targets[k]) for k in a.v_targets)
    assert not torch.equal(a.token_embedding, c.token_embedding)


def test_gates_of_special_tokens_stay_near_zero(perfusion_pack, base_models, toy_pixels):
    """Start, end and padding tokens barely open the gate (inference β 0.7, τ 0.15).

    A random-weight CLIP mixes the concept into every later token through causal attention far more
    than a trained one does, so "near 0" here is < 0.1 (r below ~0.35) rather than the ~0.01 a real
    text encoder gives; the start token, which sees nothing of the concept, must be at the floor.
    """
    from perfusion_core.gated_edit import GatedRank1Edit

    _, clip, _ = base_models
    concept = run_trainer(perfusion_pack, base_models, toy_pixels, steps=6, lr_v=0.1).concept
    te = perfusion_pack.nodes.text_encoder
    pclip = te.clip_with_concepts(
        clip, [te.ConceptWord("hugsy", te.split_embedding(clip, concept.token_embedding))]
    )
    tokens = pclip.tokenize("a photo of a hugsy")
    with torch.inference_mode():
        cond = pclip.encode_from_tokens(tokens)[0].float()
    sequence = tokens[te.text_encoders(clip)[0].key][0]
    position = next(i for i, t in enumerate(sequence) if t[0] is concept.token_embedding)
    edit = GatedRank1Edit(concept.i_star, concept.u, beta=0.7, tau=0.15)
    gates = edit.gates(cond)[:, 0]
    after = gates[position + 1 :]  # the end token and the padding
    print(
        f"gates: start {float(gates[0]):.4f}, concept {float(gates[position]):.3f}, end/padding max {float(after.max()):.4f}"
    )
    assert float(gates[0]) < 0.02
    assert float(after.max()) < 0.1
    assert int(gates.argmax()) == position


def test_saved_file_round_trips_and_is_small(perfusion_pack, base_models, toy_pixels, tmp_path):
    from perfusion_core.concept_writer import save_concept

    concept = run_trainer(perfusion_pack, base_models, toy_pixels, steps=2).concept
    path = save_concept(concept, tmp_path / "c.safetensors")
    loaded = load_concept(path)
    differing = {
        f.name: (getattr(concept.info, f.name), getattr(loaded.info, f.name))
        for f in dataclasses.fields(concept.info)
        if getattr(concept.info, f.name) != getattr(loaded.info, f.name)
    }
    assert not differing
    for name in ("token_embedding", "i_star", "u", "superclass_encoding"):
        assert torch.equal(getattr(loaded, name), getattr(concept, name))
    for layer, target in concept.v_targets.items():
        torch.testing.assert_close(loaded.v_targets[layer], target.half().float())
    widths = sum(concept.layer_widths.values())
    # docs/method.md §7: fp32 vectors, fp16 targets, header
    bound = 4 * concept.encoder_width * 4 + widths * 2 + 8192
    print(f"concept file {path.stat().st_size} bytes for widths summing to {widths} (bound {bound})")
    assert path.stat().st_size <= bound


def test_interrupting_training_stops_within_one_step_and_writes_nothing(
    comfy_host, tiny_ckpt_name, toy_images
):
    files = concept_files(comfy_host)
    prompt = train_prompt(tiny_ckpt_name, toy_images["hugsy"], steps=40, seed=3, save_name="interrupted")
    trainer, seen = trainer_id(prompt), []

    def on_message(event, data):
        if event == "progress" and data.get("node") == trainer:
            seen.append(data["value"])
            if data["value"] == 3:
                comfy_host.interrupt()

    result = comfy_host.run(prompt, on_message=on_message)
    assert result.interrupted, result.error_text
    assert max(seen) <= 4, seen
    assert concept_files(comfy_host) == files


def test_checkpoints_during_training_and_resume(comfy_host, tiny_ckpt_name, toy_images):
    extra = {"save_every": 2, "checkpoint_name": "resume_me"}
    comfy_host.run(
        train_prompt(tiny_ckpt_name, toy_images["hugsy"], steps=5, seed=4, extra=extra)
    ).raise_for_error()
    path = comfy_host.base_dir / "models" / "perfusion" / "resume_me.safetensors"
    checkpoint = load_concept(path)
    assert checkpoint.info.steps == 4  # the last multiple of save_every before the end
    prompt = train_prompt(tiny_ckpt_name, toy_images["hugsy"], steps=2, seed=5, save_name="resumed")
    resume_from(prompt, "resume_me.safetensors")
    comfy_host.run(prompt).raise_for_error()
    resumed = load_concept(comfy_host.base_dir / "models" / "perfusion" / "resumed.safetensors")
    assert resumed.info.steps == 6
    assert not torch.equal(resumed.token_embedding, checkpoint.token_embedding)


BAD_INPUTS = {
    "several words": ({"concept_word": "my bear"}, "concept word 'my bear'"),
    "vocabulary collision": ({"concept_word": "dog"}, "already a word of the text encoder's vocabulary"),
    "superclass not in vocabulary": ({"superclass": "qzxvbear"}, "superclass word 'qzxvbear'"),
    "template without slot": ({"templates": "a photo"}, "prompt template 'a photo'"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_words_are_clear_execution_errors_and_write_nothing(comfy_host, tiny_ckpt_name, toy_images, case):
    change, message = BAD_INPUTS[case]
    files = concept_files(comfy_host)
    prompt = train_prompt(
        tiny_ckpt_name, toy_images["hugsy"], steps=2, save_name=f"bad_{case.replace(' ', '_')}"
    )
    prompt.inputs(TRAINER).update(change)
    result = comfy_host.run(prompt)
    assert result.error_kind == "execution", result.error_text
    assert message in result.error_text
    assert concept_files(comfy_host) == files


def test_steps_zero_is_a_validation_error(comfy_host, tiny_ckpt_name, toy_images):
    prompt = train_prompt(tiny_ckpt_name, toy_images["hugsy"], steps=0)
    result = comfy_host.run(prompt)
    assert result.error_kind == "validation" and "steps" in result.error_text


def test_mask_count_and_size_mismatches_are_refused(comfy_host, tiny_ckpt_name, toy_images):
    files = concept_files(comfy_host)
    prompt = train_prompt(tiny_ckpt_name, toy_images["hugsy"], steps=2, save_name="bad_mask")
    first = prompt.nodes("LoadImage")[0]
    trainer = prompt.inputs(TRAINER)
    trainer["mask"] = first[1]  # the first image's mask only: 1 mask for 3 images
    result = comfy_host.run(prompt)
    assert result.error_kind == "execution" and "1 masks for 3 images" in result.error_text
    mask = prompt.add("SolidMask", value=1.0, width=32, height=32)
    image = prompt.add("RepeatImageBatch", image=first, amount=1)
    trainer.update({"mask": mask[0], "images": image[0]})
    result = comfy_host.run(prompt)
    assert result.error_kind == "execution" and "differs from the images'" in result.error_text
    assert concept_files(comfy_host) == files


def test_no_images_is_refused(perfusion_pack, base_models):
    with pytest.raises(ValueError, match="at least one training image"):
        run_trainer(perfusion_pack, base_models, torch.zeros(0, 64, 64, 3))


def test_load_images_helper_builds_batches():
    g = Graph()
    images, masks = g.load_images(["a.png", "b.png"])
    assert images in g.nodes("ImageBatch") and masks == g.node("ImageToMask")


@pytest.mark.parametrize("n_images", [1, 2, 3])
@pytest.mark.parametrize("batch_size", [1, 4, 8])
def test_any_number_of_images_trains_at_any_batch_size(
    comfy_host, tiny_ckpt_name, toy_images, n_images, batch_size
):
    """Batches larger than the images (and their flips) draw with replacement: one photo trains too."""
    prompt = train_prompt(tiny_ckpt_name, toy_images["hugsy"][:n_images], steps=1, batch_size=batch_size)
    result = comfy_host.run(prompt).raise_for_error()
    before, after = result.outputs[trainer_id(prompt)]["perfusion_eval"]
    assert np.isfinite([before, after]).all()


def test_batches_hold_distinct_samples_while_they_can():
    from perfusion_core.training import plan_batch

    generator = torch.Generator().manual_seed(0)
    for n, batch, flip in [(3, 3, 0.5), (3, 6, 0.5), (3, 2, 0.0), (1, 2, 0.5)]:
        for _ in range(20):
            plan = plan_batch(generator, n, ["{}"], batch, flip)
            pairs = list(zip(plan.image_indices, plan.flips))
            assert len(set(pairs)) == batch, (n, batch, pairs)
            if batch <= n:
                assert len(set(plan.image_indices)) == batch
    plan = plan_batch(generator, 1, ["{}"], 8, 0.5)  # more than one photo and its flip: with replacement
    assert plan.image_indices == [0] * 8


def test_key_lock_off_trains_and_applies_without_a_key_edit(perfusion_pack, base_models, toy_pixels):
    """The ablation the benchmark compares against: K unedited in training and with loader 'off'."""
    model, clip, _ = base_models
    concept = run_trainer(perfusion_pack, base_models, toy_pixels, steps=2, key_lock=False).concept
    assert concept.info.training_settings["key_lock"] == "off"
    apply = perfusion_pack.nodes.apply.apply_concept
    unlocked = apply(model, clip, concept, -50.0, 0.15, "off", "test")[0]
    locked = apply(model, clip, concept, -50.0, 0.15, "local", "test")[0]
    with torch.inference_mode():
        for layer in perfusion_pack.nodes.model_patch.cross_attention_layers(model):
            w_k = model.get_model_object(layer.key_path).weight.float()
            x = concept.i_star[None, None].to(w_k.dtype)
            plain = unlocked.get_model_object(f"{layer.key_path}.forward")(x)[0, 0].float()
            torch.testing.assert_close(plain, w_k @ concept.i_star, rtol=1e-3, atol=1e-3)
            edited = locked.get_model_object(f"{layer.key_path}.forward")(x)[0, 0].float()
            assert not torch.allclose(edited, plain, rtol=1e-3, atol=1e-3)


def test_an_inpainting_model_trains_with_the_hosts_default_mask(perfusion_pack, comfy_host, toy_pixels):
    """9 input channels: the latent, and the mask + masked image that ComfyUI gives a sampler with
    no mask (everything to generate); the trained concept then samples on that model."""
    name = comfy_host.add_checkpoint("tiny_inpaint")
    with torch.inference_mode():
        models = sys.modules["nodes"].CheckpointLoaderSimple().load_checkpoint(name)[:3]
    assert models[0].model.diffusion_model.in_channels == 9
    result = run_trainer(perfusion_pack, models, toy_pixels, steps=1)
    assert np.isfinite(result.losses).all() and np.isfinite(result.eval_after)
