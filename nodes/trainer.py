"""Runs key-locked Perfusion training on the host (docs/method.md §3, §6): glue between ComfyUI's
models and `perfusion_core.training`.

Everything of the model outside the Perfusion parameters stays frozen: the denoiser and the text
encoder run on training clones whose only patches are the projection edits (and, for the text
encoder, out-of-place layer forwards so gradients reach the word embedding).

A `TrainingJob` says what to train; `open_run` checks it against the models and sets a `TrainingRun`
up, which `train_concept` drives. How the clones are made trainable (`trainable_clones`), what the
denoiser reads (`denoiser_inputs`) and the checks of the user's inputs (`training_inputs`) live in
their own modules.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import comfy.model_management
import comfy.patcher_extension
import comfy.utils
import torch
import torch.nn.functional as F

from ..perfusion_core.compatibility import check_compatible
from ..perfusion_core.concept import Concept, ConceptInfo
from ..perfusion_core.training import (
    BatchPlan,
    ConceptTrainingState,
    masked_noise_loss,
    normalise_mask,
    plan_batch,
)
from ..perfusion_core.training_job import TrainingJob
from . import apply, covariance_cache, model_patch, text_encoder
from . import precision as precision_module
from .checkpointing import checkpoint_unet
from .denoiser_inputs import (
    PromptEncoder,
    check_input_channels,
    encode_latents,
    extra_inputs,
    model_vectors,
    superclass_encoding,
)
from .trainable_clones import (
    blocks_add_in_place,
    copy_norm_inputs,
    own_weight_copies,
    release_inference_weights,
    trainable_clip,
)
from .training_inputs import check_words, prepare_images

log = logging.getLogger("comfyui-perfusion")


@dataclass
class TrainingResult:
    concept: Concept
    losses: list[float]  # per optimizer step (mean over its micro-batches)
    eval_before: float  # the objective on a fixed batch of the training images, before training
    eval_after: float  # ... and after: a like-for-like measure of progress


def _inverse_covariance(clip, job: TrainingJob) -> torch.Tensor:
    """The job's own C⁻¹, else the one estimated over its `covariance_prompts` (cached per model)."""
    if job.c_inv is not None:
        return job.c_inv
    with torch.no_grad():
        return covariance_cache.inverse_covariance(clip, job.covariance_prompts)


class TrainingRun:
    """One training run: models, data and the state being optimised, set up once.

    `model` and `clip` are the training clones (projection edits from `state`, trainable word);
    `precision` is the dtype the denoiser computes in and its loss scaler.
    """

    def __init__(self, model, clip, vae, job: TrainingJob) -> None:
        """A failure part-way through the set-up closes the run before it is raised, so clones that
        already loaded do not leave their patches in force."""
        self.clones: list = []  # patchers of this run, unloaded by close()
        self.job = job
        self.user_model, self.user_clip = model, clip  # what the concept's metadata describes
        try:
            self._set_up(model, clip, vae)
        except BaseException:
            self.close()
            raise

    def _set_up(self, model, clip, vae) -> None:
        job, config = self.job, self.job.config
        pixels, weights = prepare_images(job.images, job.masks, config.resolution)
        if config.image_templates and len(config.image_templates) != pixels.shape[0]:
            raise ValueError(
                f"captions: {len(config.image_templates)} captions for {pixels.shape[0]} images; give one per image"
            )
        c_inv = _inverse_covariance(clip, job)
        self.device = comfy.model_management.get_torch_device()
        dtype, why = precision_module.resolve(job.precision, model, self.device)
        self.precision = precision_module.Precision(dtype, self.device)
        self.config = replace(config, extra={**config.extra, "precision": self.precision.name})
        log.info("Perfusion: training computes the denoiser in %s (%s)", self.precision.name, why)
        self._encode_images(model, vae, pixels, weights)
        layers = model_patch.cross_attention_layers(model)
        encoders = text_encoder.text_encoders(clip)
        self.state = self._new_state(clip, layers, [e.width for e in encoders], c_inv)
        with torch.no_grad():
            self.vectors = model_vectors(model, clip, job.superclass, config.templates, config.resolution)
        embeddings = {e.key: p for e, p in zip(encoders, self.state.token_embeddings, strict=True)}
        self._make_clones(model, clip, dtype, embeddings)
        comfy.model_management.load_models_gpu([self.model, self.clip.patcher], force_full_load=True)
        release_inference_weights(self.model.model.diffusion_model)
        release_inference_weights(self.clip.cond_stage_model)
        self.state.to(self.device)
        if job.resume is None:
            self._init_v_targets(layers)
        self.encoder = PromptEncoder(self.clip, job.word, embeddings)
        # The model's own sampling object: a ModelSamplingDiscrete (v-prediction...) patch included.
        self.sampling = self.model.get_model_object("model_sampling")
        self.transformer_options = comfy.patcher_extension.copy_nested_dicts(
            self.model.model_options.get("transformer_options", {})
        )

    def _encode_images(self, model, vae, pixels: torch.Tensor, weights: torch.Tensor | None) -> None:
        """Latents of the images and their mirror images, and the masks at latent size."""
        pixels_both = torch.cat([pixels, pixels.flip(-1)])
        self.latents = encode_latents(model, vae, pixels_both)
        self.masks = None
        if weights is not None:
            both = torch.cat([weights, weights.flip(-1)])
            self.masks = normalise_mask(F.interpolate(both, size=self.latents.shape[-2:], mode="area"))
        self.n_images = pixels.shape[0]

    def _new_state(self, clip, layers, widths: list[int], c_inv: torch.Tensor) -> ConceptTrainingState:
        """The resumed concept's values, or the superclass's: its embedding and ī_super as i*."""
        job, config = self.job, self.job.config
        if job.resume is not None:
            return ConceptTrainingState.resume(job.resume, c_inv, config.beta, config.tau, widths)
        return ConceptTrainingState(
            text_encoder.input_embedding(clip, job.superclass),
            superclass_encoding(clip, job.superclass, config.templates),
            {layer.name: torch.zeros(layer.width) for layer in layers},  # W_V ī_super, set later
            c_inv,
            config.beta,
            config.tau,
            embedding_widths=widths,
        )

    def _make_clones(self, model, clip, dtype: torch.dtype, embeddings: dict[str, torch.Tensor]) -> None:
        """The training clones of the model and CLIP, and the CLIP previews encode with."""
        job = self.job
        self.model = model_patch.install_source(model, self.state, key_edits=job.config.key_lock)
        self.clones.append(self.model)
        own_weight_copies(self.model)
        if dtype != precision_module.model_compute_dtype(model):
            self.model.set_model_compute_dtype(dtype)  # ComfyUI casts each weight as it is used
        if job.gradient_checkpointing:
            checkpoint_unet(self.model)
        if blocks_add_in_place():
            copy_norm_inputs(self.model)
        self.clip = trainable_clip(clip, job.word, embeddings, job.gradient_checkpointing)
        self.clones.append(self.clip.patcher)
        own_weight_copies(self.clip.patcher)
        # Previews encode as generation will: the same learned embeddings on the user's CLIP, with the
        # pooled vector of the superclass prompt (SDXL), which training feeds through `y` instead.
        superclass_embeddings = text_encoder.split_embedding(
            clip, text_encoder.input_embedding(clip, job.superclass)
        )
        self.preview_clip = text_encoder.clip_with_concepts(
            clip, [text_encoder.ConceptWord(job.word, embeddings, superclass_embeddings)]
        )
        self.clones.append(self.preview_clip.patcher)
        # the training CLIP's weight copies: the two alternate at every preview, and a uuid that
        # changed in between would make ComfyUI unpatch and reload the text encoder each time
        self.preview_clip.patcher.patches_uuid = self.clip.patcher.patches_uuid

    def __enter__(self) -> TrainingRun:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Unloads the training clones, which restores every attribute they patched on the model they
        share with the user's (projection edits, compute dtype, checkpointed blocks): nothing of the
        run stays in force for the next node, or for the next run reading the model's dtype."""
        loaded = comfy.model_management.current_loaded_models
        for patcher in self.clones:
            for i in reversed(range(len(loaded))):
                if loaded[i].model is patcher:
                    loaded.pop(i).model_unload()

    @torch.no_grad()
    def _init_v_targets(self, layers) -> None:
        """o*_V starts at W_V ī_super, through the host's own (cast, LoRA-aware) projection, in the
        dtype training computes in (not the storage dtype: CUDA has no fp8 matmul)."""
        enc = self.state.superclass_encoding[None, None].to(self.device, self.precision.dtype)
        for layer, target in zip(layers, self.state.v_targets):
            projection = self.model.get_model_object(f"{layer.value_path}.forward")
            target.copy_(projection.prev_forward(enc).float()[0, 0])

    def loss(self, batch: BatchPlan, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked noise-prediction loss, the concept token's encodings) for one micro-batch."""
        rows = [i + (self.n_images if f else 0) for i, f in zip(batch.image_indices, batch.flips)]
        x0 = self.latents[rows].to(self.device)
        percents = batch.timesteps.clamp(1e-3, 1 - 1e-3).tolist()  # both ends are ±inf/0 sigmas
        sigma = torch.tensor([float(self.sampling.percent_to_sigma(p)) for p in percents], device=self.device)
        cond, positions = self.encoder(batch.templates)
        cond = cond.to(self.device)
        # sigma shaped to broadcast over each latent: hosts before 2025 do not reshape it themselves
        x_t = self.sampling.noise_scaling(sigma.view(-1, *[1] * (x0.ndim - 1)), noise.to(self.device), x0)
        vectors = [self.vectors[t] for t in batch.templates]
        extra = {} if vectors[0] is None else {"y": torch.cat(vectors).to(self.device)}
        denoised = self.model.model.apply_model(
            x_t,
            sigma,
            c_concat=extra_inputs(self.model, x_t),
            c_crossattn=cond,
            transformer_options=self.transformer_options,
            **extra,
        )
        mask = self.masks[rows].to(self.device) if self.masks is not None else None
        concept = torch.stack([cond[k, p] for k, p in enumerate(positions)]).detach()
        return masked_noise_loss(denoised, x0, sigma, mask) * self.config.loss_weight, concept

    def noise(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn((batch_size, *self.latents.shape[1:]), generator=generator)

    @torch.no_grad()
    def evaluate(self) -> float:
        """The objective on a fixed batch (every image, mid-range noise levels, first template or the
        images' captions)."""
        n = self.n_images
        templates = list(self.config.image_templates) or [self.config.templates[0]] * n
        batch = BatchPlan(list(range(n)), [False] * n, templates, torch.linspace(0.2, 0.8, n))
        noise = self.noise(n, torch.Generator().manual_seed(self.config.seed + 1))
        return float(self.loss(batch, noise)[0])

    def gradients(self, batch: BatchPlan, noise: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unscaled gradients of one micro-batch's loss: 'token_embedding' and each layer's V target
        (what the precision comparison of the GPU check and the tests read). Leaves no .grad behind."""
        parts = list(self.state.token_embeddings)
        if len(parts) == 1:
            params = {"token_embedding": parts[0]}
        else:
            keys = [e.key for e in text_encoder.text_encoders(self.clip)]
            params = {f"token_embedding.{k}": p for k, p in zip(keys, parts, strict=True)}
        params.update(zip(self.state.layer_names, self.state.v_targets))
        for p in params.values():
            p.grad = None
        self.precision.backward(self.loss(batch, noise)[0])
        scale = self.precision.gradient_scale()
        out = {name: p.grad.detach().float().cpu() / scale for name, p in params.items()}
        for p in params.values():
            p.grad = None
        return out

    def train(self, on_step: OnStep | None) -> list[float]:
        """Runs `config.steps` optimizer steps; `on_step(step, loss, run)` is called before the first
        (step 0, loss None) and after each."""
        config = self.config
        optimizer = self.state.optimizer(config)
        generator = torch.Generator().manual_seed(config.seed)
        progress = comfy.utils.ProgressBar(config.steps)
        losses: list[float] = []
        if on_step is not None:
            on_step(0, None, self)
        for step in range(1, config.steps + 1):
            optimizer.zero_grad(set_to_none=True)
            step_loss, concept_encodings = 0.0, []
            for _ in range(config.grad_accumulation):
                comfy.model_management.throw_exception_if_processing_interrupted()
                batch = plan_batch(
                    generator,
                    self.n_images,
                    config.templates,
                    config.batch_size,
                    config.flip_probability,
                    config.image_templates,
                )
                loss, concept = self.loss(batch, self.noise(config.batch_size, generator))
                self.precision.backward(loss / config.grad_accumulation)
                step_loss += float(loss.detach()) / config.grad_accumulation
                if config.i_star_per_micro_batch:
                    self.state.update_i_star(concept, config.i_star_momentum)
                else:
                    concept_encodings.append(concept)
            if self.precision.step(optimizer, step) and concept_encodings:
                self.state.update_i_star(torch.cat(concept_encodings), config.i_star_momentum)
            losses.append(step_loss)
            progress.update(1)
            if on_step is not None:
                on_step(step, step_loss, self)
        optimizer.zero_grad(set_to_none=True)
        if self.precision.skipped_steps:
            log.warning(
                "Perfusion: %d of %d steps skipped for fp16 overflow",
                self.precision.skipped_steps,
                config.steps,
            )
        return losses

    def concept(self, steps: int) -> Concept:
        """The concept after `steps` steps of this run (plus those of the concept it resumed), with the
        metadata of the user's model and CLIP it was trained on."""
        resume, clip = self.job.resume, self.user_clip
        info = ConceptInfo(
            word=self.job.word,
            superclass=self.job.superclass,
            model_family=type(self.user_model.model.model_config).__name__,
            encoder_fingerprint=text_encoder.encoder_fingerprint(clip),
            train_beta=self.config.beta,
            train_tau=self.config.tau,
            steps=steps + (resume.info.steps if resume is not None else 0),
            training_settings=self.config.as_metadata(),
            clip_layer=text_encoder.encoder_layer(clip),
            text_encoders=text_encoder.encoder_layout(clip),
            training_images=self.n_images,
        )
        return self.state.to_concept(info)


OnStep = Callable[[int, float | None, TrainingRun], None]  # (step, loss or None at step 0, run)


def open_run(model, clip, vae, job: TrainingJob) -> TrainingRun:
    """Checks the job against the models and sets up a run; use it under `torch.inference_mode(False)`
    and `torch.enable_grad()` (the executor runs nodes in inference mode), as a context manager (or
    call `close()`) so the training clones are unloaded when it ends."""
    model_patch.served_layers(model, clip)
    check_input_channels(model)
    check_words(clip, job.word, job.superclass)
    if job.config.steps < 1:
        raise ValueError("steps must be at least 1")
    resume = job.resume
    if resume is not None:
        for warning in check_compatible(resume, apply.model_signature(model, clip), source="resume"):
            log.warning(warning)
        mismatch = text_encoder.layer_mismatch(
            job.word, resume.info.clip_layer, text_encoder.encoder_layer(clip)
        )
        if mismatch:
            raise ValueError(f"resume: {mismatch}")
    return TrainingRun(model, clip, vae, job)


def train_concept(model, clip, vae, job: TrainingJob, *, on_step: OnStep | None = None) -> TrainingResult:
    """Optimises the word embedding and V targets; K stays locked to W_K ī_super (docs/method.md §3, §6)."""
    with torch.inference_mode(False), torch.enable_grad():
        with open_run(model, clip, vae, job) as run:
            before = run.evaluate()
            losses = run.train(on_step)
            after = run.evaluate()
    return TrainingResult(run.concept(job.config.steps), losses, before, after)
