"""Training in the dtype users' GPUs compute in, checked on this CPU.

On a CPU, ComfyUI stores `--fp16-unet` weights in fp16 but computes in fp32 (manual cast), so the
host's flags never exercise the GPU path. Here the checkpoint is loaded while ComfyUI's device check
(`should_use_fp16` / `should_use_bf16`) answers yes, as it does on a GPU: the weights are stored in
half precision and the denoiser computes in it, with no manual cast. The run then resolves
`precision = auto` to that dtype, as it would on the GPU.
"""

import contextlib
import dataclasses
import sys

import pytest
import torch

from harness import training_runs
from perfusion_core.training import BatchPlan, TrainingConfig
from perfusion_core.training_job import TrainingJob

TEMPLATES = ("a photo of a {}", "a good photo of the {}")
HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}


def load_models(name: str, half: str | None):
    """(MODEL, CLIP, VAE) as CheckpointLoaderSimple gives them on a device that computes in `half`."""
    import comfy.model_management as mm

    loader = sys.modules["nodes"].CheckpointLoaderSimple()
    with pytest.MonkeyPatch.context() as patch:
        if half is not None:
            patch.setattr(mm, "should_use_fp16", lambda *a, **k: half == "fp16")
            patch.setattr(mm, "should_use_bf16", lambda *a, **k: half == "bf16")
        with torch.inference_mode():
            models = loader.load_checkpoint(name)[:3]
    unet = models[0].model
    if half is not None:  # the GPU path: half weights, half compute, no manual cast
        assert unet.get_dtype() == HALF[half] and unet.manual_cast_dtype is None
    return models


def load_fp8_models(name: str):
    """Weights stored as fp8 (e4m3fn), which ComfyUI casts to its compute dtype at run time."""
    import comfy.sd
    import folder_paths

    path = folder_paths.get_full_path_or_raise("checkpoints", name)
    with torch.inference_mode():
        models = comfy.sd.load_checkpoint_guess_config(
            path,
            output_vae=True,
            output_clip=True,
            embedding_directory=folder_paths.get_folder_paths("embeddings"),
            model_options={"dtype": torch.float8_e4m3fn},
        )[:3]
    assert (
        models[0].model.get_dtype() == torch.float8_e4m3fn and models[0].model.manual_cast_dtype is not None
    )
    return models


@pytest.fixture(scope="module")
def models(comfy_host, tiny_ckpt_name):
    return {p: load_models(tiny_ckpt_name, None if p == "fp32" else p) for p in ("fp32", "fp16", "bf16")}


def config(steps: int = 1, loss_weight: float = 1.0) -> TrainingConfig:
    return TrainingConfig(
        templates=TEMPLATES,
        resolution=64,
        steps=steps,
        seed=3,
        batch_size=1,
        grad_accumulation=1,
        lr_v=0.1,
        lr_embedding=0.01,
        loss_weight=loss_weight,
    )


# 1/64: a 512 px run's per-element gradients (64x the latent elements of 64 px); 1/4096: far smaller
SCALES = {"64px": 1.0, "512px-scale": 1 / 64, "4096px-scale": 1 / 4096}


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


@contextlib.contextmanager
def opened_run(pack, model_set, pixels, precision: str = "auto"):
    """A training run on `model_set`, with autograd on, unloaded when the block ends."""
    with torch.inference_mode(False), torch.enable_grad():
        with training_runs.open_run(pack, model_set, pixels, config(), precision=precision) as run:
            yield run


def fixed_batch(run) -> tuple[BatchPlan, torch.Tensor]:
    """Every image once, unflipped, the first template, spread noise levels, seeded noise."""
    n = run.n_images
    batch = BatchPlan(list(range(n)), [False] * n, [TEMPLATES[0]] * n, torch.linspace(0.1, 0.9, n))
    return batch, run.noise(n, torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def first_gradients(perfusion_pack, models, toy_pixels):
    """{(model dtype, scale): gradients of one fixed micro-batch / the loss weight}, plus fp16 at the
    smallest scale without loss scaling ("fp16-unscaled"), the failure that scaling prevents."""
    out = {}
    for precision, model_set in models.items():
        with opened_run(perfusion_pack, model_set, toy_pixels) as run:
            assert run.precision.dtype == {"fp32": torch.float32, **HALF}[precision]  # auto = model dtype
            batch, noise = fixed_batch(run)
            for scale, weight in SCALES.items():
                run.config = dataclasses.replace(run.config, loss_weight=weight)
                grads = run.gradients(batch, noise)
                out[precision, scale] = {k: g / weight for k, g in grads.items()}
            if precision == "fp16":
                run.precision.scaler = torch.amp.GradScaler("cpu", enabled=False)
                grads = run.gradients(batch, noise)
                out["fp16-unscaled", "4096px-scale"] = {k: g / weight for k, g in grads.items()}
    return out


@pytest.mark.parametrize("scale", list(SCALES))
@pytest.mark.parametrize("half", ["fp16", "bf16"])
def test_first_step_gradients_in_half_precision_match_fp32(first_gradients, half, scale):
    """Every trained tensor gets the fp32 gradient's direction and nothing underflows to zero, also
    at the per-element gradient scale of 512 px and beyond."""
    reference = first_gradients["fp32", scale]
    for name, ref in reference.items():
        got = first_gradients[half, scale][name]
        print(f"{half} {scale} {name[-48:]}: cosine {cosine(got, ref):.6f}, |g| {float(ref.norm()):.3e}")
        assert torch.isfinite(got).all(), name
        assert cosine(got, ref) >= 0.99, name
        assert not ((got == 0) & (ref != 0)).any(), f"{name}: entries underflowed to zero"


def test_without_loss_scaling_fp16_gradients_underflow(first_gradients):
    """The control: the same fp16 run without the scaler loses gradient entries at small scales."""
    reference = first_gradients["fp32", "4096px-scale"]
    got = first_gradients["fp16-unscaled", "4096px-scale"]
    lost = sum(int(((got[k] == 0) & (reference[k] != 0)).sum()) for k in reference)
    worst = min(cosine(got[k], reference[k]) for k in reference)
    print(f"fp16 without loss scaling at 1/4096: {lost} entries lost to zero, worst cosine {worst:.4f}")
    assert lost > 0 or worst < 0.99


def test_precision_input_overrides_the_model_dtype(perfusion_pack, models, toy_pixels, first_gradients):
    """fp32 on a half model computes in fp32 (ComfyUI casts each weight); fp16 on an fp32 model in fp16."""
    reference = first_gradients["fp32", "64px"]
    for model_dtype, precision in (("fp16", "fp32"), ("fp32", "fp16")):
        with opened_run(perfusion_pack, models[model_dtype], toy_pixels, precision) as run:
            assert run.precision.name == precision
            grads = run.gradients(*fixed_batch(run))
        assert all(cosine(grads[k], reference[k]) >= 0.99 for k in reference)


def test_fp8_stored_weights_train_in_their_compute_dtype(
    perfusion_pack, tiny_ckpt_name, toy_pixels, first_gradients
):
    """fp8 storage is only storage: auto trains in the dtype ComfyUI casts the weights to (fp32 on a
    CPU). fp8 e4m3 keeps 3 mantissa bits, so these weights differ from the fp32 ones by up to ~6 %:
    the gradients keep the fp32 direction within cosine 0.95."""
    model_set = load_fp8_models(tiny_ckpt_name)
    reference = first_gradients["fp32", "64px"]
    with opened_run(perfusion_pack, model_set, toy_pixels) as run:
        assert run.precision.dtype == model_set[0].model.manual_cast_dtype
        # o*_V starts at W_V ī_super computed in that dtype: ī is not rounded to fp8 on its way in
        # (CUDA has no fp8 matmul; here the rounding would move the start by a few per cent)
        superclass = run.state.superclass_encoding[None, None].to(run.device, run.precision.dtype)
        for layer, target in zip(
            perfusion_pack.nodes.model_patch.cross_attention_layers(run.model), run.state.v_targets
        ):
            projection = run.model.get_model_object(f"{layer.value_path}.forward").prev_forward
            torch.testing.assert_close(target.detach(), projection(superclass).float()[0, 0])
        grads = run.gradients(*fixed_batch(run))
    for name, ref in reference.items():
        print(f"fp8 storage {name[-48:]}: cosine {cosine(grads[name], ref):.5f}")
        assert torch.isfinite(grads[name]).all() and cosine(grads[name], ref) >= 0.95, name


def test_auto_precision_follows_the_model_compute_dtype_node(perfusion_pack, models):
    """ModelComputeDtype sets the compute dtype as an object patch, which reaches the model only once
    it loads: `auto` reads it through the patcher, so training computes as the sampler will."""
    model = models["fp32"][0].clone()
    model.set_model_compute_dtype(torch.float16)  # what the ModelComputeDtype node does
    dtype, _ = perfusion_pack.nodes.precision.resolve("auto", model, torch.device("cpu"))
    assert dtype == torch.float16


def test_training_clones_get_their_own_weight_copies(perfusion_pack, models, toy_pixels):
    """Dynamic VRAM reuses a layer's device copy of its weights while the loading patcher's
    patches_uuid is the one that made it, and clone() keeps it: the training clones get new ones, so a
    run after a KSampler does not compute with copies made under inference mode."""
    model, clip, _ = models["fp32"]
    with opened_run(perfusion_pack, models["fp32"], toy_pixels) as run:
        assert run.model.patches_uuid != model.patches_uuid
        assert run.clip.patcher.patches_uuid != clip.patcher.patches_uuid


def movement(pack, models, embedding: torch.Tensor, v_targets: dict) -> torch.Tensor:
    """How far training moved the embedding and every V target from where it started, as one vector
    (each layer's part relative to its start's norm, so wide layers do not dominate)."""
    model, clip, _ = models
    parts = [embedding - pack.nodes.text_encoder.input_embedding(clip, "teddy")]
    superclass = pack.nodes.trainer.superclass_encoding(clip, "teddy", TEMPLATES)[None, None]
    with torch.inference_mode():
        for layer in pack.nodes.model_patch.cross_attention_layers(model):
            w_v = model.get_model_object(layer.value_path)
            start = w_v(superclass.to(w_v.weight.dtype)).float()[0, 0]
            parts.append((v_targets[layer.name] - start) / start.norm())
    return torch.cat(parts)


def train(pack, model_set, pixels, cfg, snapshot_at: int):
    """(TrainingResult, (embedding, V targets) after `snapshot_at` steps)."""
    snapshot = {}

    def on_step(step, _loss, run):
        if step == snapshot_at:
            state = run.state
            snapshot["at"] = (
                state.token_embedding.detach().float().cpu().clone(),
                {n: state.v_target(n).detach().float().cpu().clone() for n in state.layer_names},
            )

    model, clip, vae = model_set
    job = TrainingJob("hugsy", "teddy", pixels, cfg, covariance_prompts=128)
    result = pack.nodes.trainer.train_concept(model, clip, vae, job, on_step=on_step)
    return result, snapshot["at"]


@pytest.mark.slow
@pytest.mark.parametrize("scale", ["64px", "512px-scale"])
def test_half_precision_training_moves_and_learns_like_fp32(perfusion_pack, models, toy_pixels, scale):
    """8 steps move the embedding and V targets in the fp32 run's direction (cosine >= 0.9); at 64 px,
    30 steps lower the objective as much as fp32 does (within 20 % of fp32's drop)."""
    steps = 30 if scale == "64px" else 8
    runs = {p: train(perfusion_pack, models[p], toy_pixels, config(steps, SCALES[scale]), 8) for p in models}
    moved = {p: movement(perfusion_pack, models[p], *snapshot) for p, (_, snapshot) in runs.items()}
    drops = {p: result.eval_before - result.eval_after for p, (result, _) in runs.items()}
    for half in HALF:
        direction = cosine(moved[half], moved["fp32"])
        print(
            f"{half} vs fp32 at {scale}: 8-step direction cosine {direction:.4f}; "
            f"{steps}-step objective drop {drops[half]:.6f} vs {drops['fp32']:.6f}"
        )
        assert direction >= 0.9
        assert runs[half][0].concept.info.training_settings["precision"] == half
        if scale == "64px":
            assert drops["fp32"] > 0
            assert abs(drops[half] - drops["fp32"]) <= 0.2 * drops["fp32"]


def test_fp16_overflow_skips_the_step_and_says_so(perfusion_pack, models, toy_pixels, caplog):
    """Gradients that overflow fp16 (here: the loss weighted 1e30) skip the step: the trained values
    stay where they started, and the log names each skipped step and the count."""
    model, clip, vae = models["fp16"]
    with caplog.at_level("WARNING", logger="comfyui-perfusion"):
        job = TrainingJob("hugsy", "teddy", toy_pixels, config(2, 1e30), covariance_prompts=128)
        result = perfusion_pack.nodes.trainer.train_concept(model, clip, vae, job)
    assert "step 1 skipped: fp16 gradients overflowed" in caplog.text
    assert "2 of 2 steps skipped for fp16 overflow" in caplog.text
    concept = result.concept
    assert torch.equal(
        concept.token_embedding, perfusion_pack.nodes.text_encoder.input_embedding(clip, "teddy")
    )
    assert (
        float(
            movement(perfusion_pack, models["fp16"], concept.token_embedding, concept.v_targets).abs().max()
        )
        == 0
    )


def run_clones_loaded(model, clip) -> list:
    """Loaded patchers that are clones of the user's model or CLIP (not those themselves): a run's
    training and preview clones, with their patches (compute dtype, projection edits, concept words)."""
    import comfy.model_management

    users = (model, clip.patcher)
    return [
        loaded.model
        for loaded in comfy.model_management.current_loaded_models
        if loaded.model is not None
        and all(loaded.model is not u for u in users)
        and any(loaded.model.is_clone(u) for u in users)
    ]


@pytest.mark.parametrize(
    ("precision", "ending"),
    [("fp16", "finished"), ("bf16", "finished"), ("fp16", "interrupted"), ("bf16", "failed")],
)
def test_a_run_leaves_no_patch_on_the_shared_model(
    perfusion_pack, models, toy_pixels, monkeypatch, precision, ending
):
    """Half-precision training of an fp32 model sets a compute dtype on its clone; once the run ends
    (finished, interrupted mid-run or failed while setting up) the model the user holds computes as
    before and no clone of it or of its CLIP stays loaded with the run's patches."""
    import comfy.model_management

    trainer = perfusion_pack.nodes.trainer
    model, clip, vae = models["fp32"]
    before = model.model.manual_cast_dtype

    def stop(step, _loss, _run):
        if step == 1:
            raise comfy.model_management.InterruptProcessingException()

    def fail(self, layers):
        raise RuntimeError("set-up failed after the models loaded")

    if ending == "failed":
        monkeypatch.setattr(trainer.TrainingRun, "_init_v_targets", fail)
    job = TrainingJob("hugsy", "teddy", toy_pixels, config(2), covariance_prompts=128, precision=precision)
    try:
        result = trainer.train_concept(
            model, clip, vae, job, on_step=stop if ending == "interrupted" else None
        )
    except (comfy.model_management.InterruptProcessingException, RuntimeError) as e:
        assert ending != "finished", e
    else:
        assert ending == "finished"
        assert result.concept.info.training_settings["precision"] == precision
    assert model.model.manual_cast_dtype is before
    assert run_clones_loaded(model, clip) == []
