"""Runs key-locked Perfusion training on the host (docs/method.md §3, §6): glue between ComfyUI's
models and `perfusion_core.training`.

Everything of the model outside the Perfusion parameters stays frozen: the denoiser and the text
encoder run on training clones whose only patches are the projection edits (and, for the text
encoder, out-of-place layer forwards so gradients reach the word embedding).
"""

from __future__ import annotations

import inspect
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

import comfy.model_base
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
    TrainingConfig,
    masked_noise_loss,
    normalise_mask,
    plan_batch,
    square_resize,
)
from . import apply, covariance_cache, model_patch, text_encoder
from . import precision as precision_module
from .checkpointing import Checkpointed, checkpoint_unet

log = logging.getLogger("comfyui-perfusion")
_WORD = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass
class TrainingResult:
    concept: Concept
    losses: list[float]  # per optimizer step (mean over its micro-batches)
    eval_before: float  # the objective on a fixed batch of the training images, before training
    eval_after: float  # ... and after: a like-for-like measure of progress


def check_words(clip, word: str, superclass: str) -> None:
    """The concept word must be one new word; the superclass one vocabulary word (docs/method.md §5)."""
    if not _WORD.match(word or ""):
        raise ValueError(
            f"concept word '{word}': use one word of letters, digits or '_' starting with a letter "
            "(it must stay one token in prompts), e.g. 'hugsy'"
        )
    if text_encoder.is_vocabulary_word(clip, word):
        raise ValueError(
            f"concept word '{word}' is already a word of the text encoder's vocabulary: every prompt "
            "using it would change. Pick a made-up word such as 'hugsy' or 'zwx'"
        )
    if not _WORD.match(superclass or "") or not text_encoder.is_vocabulary_word(clip, superclass):
        raise ValueError(
            f"superclass word '{superclass}' must be one word of the text encoder's vocabulary "
            "(one token), e.g. 'teddy', 'dog', 'cat', 'mug'"
        )
    if word.lower() == superclass.lower():
        raise ValueError("the concept word and the superclass word must differ")


def _batches(value, what: str) -> list[torch.Tensor]:
    """An IMAGE/MASK input as a list of batches: one tensor, or a dataset node's list of them."""
    if value is None or isinstance(value, torch.Tensor):
        value = [] if value is None else [value]
    if what == "mask":
        value = [m[None] if m.ndim == 2 else m for m in value]
    return [b for b in value if b.shape[0] > 0]


def prepare_images(images, masks, resolution: int):
    """IMAGE (N,H,W,3) and MASK (N,H,W) -> square (N,3,S,S) pixels and (N,1,S,S) weights.

    Each input may also be a list of batches (a dataset node's list, one image each, of any sizes):
    every image is centre-cropped to a square and resized to S on its own, as a single batch is, so
    images of different sizes train together."""
    batches = _batches(images, "images")
    if not batches or any(b.ndim != 4 for b in batches):
        raise ValueError("images: connect at least one training image")
    pixels = torch.cat([square_resize(b.movedim(-1, 1)[:, :3], resolution) for b in batches])
    if masks is None:
        return pixels, None
    mask_batches = _batches(masks, "mask")
    n_masks = sum(m.shape[0] for m in mask_batches)
    if n_masks != pixels.shape[0]:
        raise ValueError(f"mask: {n_masks} masks for {pixels.shape[0]} images; give one mask per image")
    image_sizes = [tuple(b.shape[1:3]) for b in batches for _ in range(b.shape[0])]
    mask_sizes = [tuple(m.shape[1:]) for m in mask_batches for _ in range(m.shape[0])]
    for k, (got, want) in enumerate(zip(mask_sizes, image_sizes, strict=True)):
        if got != want:
            which = "the images'" if len(batches) == 1 else f"image {k + 1}'s"
            raise ValueError(f"mask: size {got} differs from {which} {want}")
    weights = torch.cat([square_resize(m[:, None], resolution) for m in mask_batches])
    return pixels, normalise_mask(weights.clamp(0, 1))


class _OutOfPlaceLayer:
    """CLIP layer forward without `x +=`: ComfyUI's in-place adds break backward to the embedding."""

    def __init__(self, layer) -> None:
        self.layer = layer

    def __call__(self, x, mask=None, optimized_attention=None):
        layer = self.layer
        x = x + layer.self_attn(layer.layer_norm1(x), mask, optimized_attention)
        return x + layer.mlp(layer.layer_norm2(x))


def _grad_safe_operations(operations):
    """The host's layer classes with an Embedding whose weight does not require grad.

    Hosts from before 2025 (`SDClipModel.set_up_textual_embeddings`) put prompt embeddings into a
    new Embedding by writing its weight in place, which autograd refuses on a weight that requires
    grad. With this one the writes are recorded instead, so the gradient reaches the trained word.
    """

    class Embedding(operations.Embedding):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.weight.requires_grad_(False)

    return type("GradSafeOperations", (operations,), {"Embedding": Embedding})


def _trainable_clip(clip, word: str, embeddings: dict[str, torch.Tensor], checkpointing: bool):
    """A CLIP clone that maps `word` to the trained embeddings (one per text encoder); with
    checkpointing its layers are recomputed in backward, so only one layer's weights are held for
    the gradient at a time."""
    patched = text_encoder.clip_with_concepts(clip, [text_encoder.ConceptWord(word, embeddings)])
    for encoder in text_encoder.text_encoders(clip):
        if hasattr(encoder.module, "set_up_textual_embeddings"):
            operations = _grad_safe_operations(encoder.module.operations)
            patched.patcher.add_object_patch(f"{encoder.attribute}.operations", operations)
        prefix = f"{encoder.attribute}.transformer.text_model.encoder.layers"
        for i, layer in enumerate(encoder.module.transformer.text_model.encoder.layers):
            forward = _OutOfPlaceLayer(layer)
            patched.patcher.add_object_patch(
                f"{prefix}.{i}.forward", Checkpointed(forward) if checkpointing else forward
            )
    return patched


class _CopyingNorm:
    """A layer norm of a copy of its input. Hosts from before 2025 add attention outputs to a
    transformer block's input in place (`x += n`) after the norm has kept it for backward."""

    def __init__(self, forward) -> None:
        self.forward = forward

    def __call__(self, x):
        return self.forward(x.clone())


def _blocks_add_in_place() -> bool:
    """Whether this host's transformer blocks add in place (probed once from their source)."""
    from comfy.ldm.modules.attention import BasicTransformerBlock

    return "x += n" in inspect.getsource(BasicTransformerBlock)


def _copy_norm_inputs(model) -> None:
    """Lets backward through blocks that add in place (see _CopyingNorm)."""
    from comfy.ldm.modules.attention import BasicTransformerBlock

    for name, block in model.model.diffusion_model.named_modules():
        if isinstance(block, BasicTransformerBlock):
            for norm in ("norm1", "norm2"):
                forward = getattr(block, norm).forward
                model.add_object_patch(f"diffusion_model.{name}.{norm}.forward", _CopyingNorm(forward))


def _own_weight_copies(patcher) -> None:
    """Gives a training clone its own `patches_uuid`. Dynamic VRAM (ComfyUI 0.33 on NVIDIA) keeps
    each layer's device copy of its weights until a patcher with another `patches_uuid` loads the
    model, and `clone()` keeps the uuid: a run after a KSampler would otherwise compute with the
    copies made under inference mode, which autograd cannot save for backward. The next sampler,
    with the user's uuid, then makes its copies afresh."""
    patcher.patches_uuid = uuid.uuid4()


def _release_inference_weights(module: torch.nn.Module) -> None:
    """Weights loaded under the executor's inference mode cannot be saved for backward; swap in
    ordinary tensors with the same values (the model's outputs do not change)."""
    names = [name for name, _ in module.named_parameters()]  # names only: holding every old
    for name in names:  # tensor until the loop ends would double the model's memory at its peak
        param = comfy.utils.get_attr(module, name)
        if param.is_inference():
            comfy.utils.set_attr_param(module, name, param.detach().clone())
        else:
            param.requires_grad_(False)
        del param


def encode_marked(
    clip, prompts: list[str], is_marked: Callable[[object], bool]
) -> tuple[torch.Tensor, list[int]]:
    """Encodes short prompts in one pass: ((B, T, D) encodings, the position of the one marked token
    in each). Templates must stay within one 77-token chunk so positions line up; with several text
    encoders (SDXL) the word sits at the same position in each."""
    batched: dict[str, list] = {}
    positions = []
    for prompt in prompts:
        tokens = text_encoder.tokenize_unweighted(clip, prompt)
        found = {i for chunks in tokens.values() for i, t in enumerate(chunks[0]) if is_marked(t[0])}
        counts = {sum(1 for t in chunks[0] if is_marked(t[0])) for chunks in tokens.values()}
        if any(len(chunks) != 1 for chunks in tokens.values()) or counts != {1} or len(found) != 1:
            raise ValueError(
                f"prompt template for '{prompt}' must be short (one 77-token chunk) with one '{{}}'"
            )
        for key, chunks in tokens.items():
            batched.setdefault(key, []).append(chunks[0])
        positions.append(found.pop())
    cond = clip.encode_from_tokens(batched)
    return cond.reshape(len(prompts), -1, cond.shape[-1]), positions


class PromptEncoder:
    """Encodes batches of training prompts and finds the concept token in each."""

    def __init__(self, clip, word: str, embeddings: dict[str, torch.Tensor]) -> None:
        self.clip, self.word = clip, word
        self.ids = {id(e) for e in embeddings.values()}
        self.embeddings = embeddings  # keeps the ids alive

    def __call__(self, templates: list[str]) -> tuple[torch.Tensor, list[int]]:
        prompts = [t.format(self.word) for t in templates]
        return encode_marked(self.clip, prompts, lambda token: id(token) in self.ids)


def superclass_encoding(clip, superclass: str, templates: tuple[str, ...]) -> torch.Tensor:
    """ī_super: mean encoding of the superclass word over the training prompts (docs/method.md §3)."""
    token_id = text_encoder.word_token_ids(clip, superclass)[0]
    prompts = [t.format(superclass) for t in templates]
    cond, positions = encode_marked(clip, prompts, lambda token: isinstance(token, int) and token == token_id)
    return torch.stack([cond[i, p] for i, p in enumerate(positions)]).float().mean(0).cpu()


def model_vectors(model, clip, superclass: str, templates: tuple[str, ...], resolution: int) -> dict:
    """Per template, the model's vector input `y` (None where the model takes none, as SD1.x/SD2.x).

    SDXL reads the pooled text output and the image size there. The pooled output is that of the
    superclass prompt, as at inference (text_encoder.ConceptEncoder), and the size the training
    resolution, as a sampler at that size passes it."""
    if not getattr(model.model, "adm_channels", 0):
        return dict.fromkeys(templates)
    vectors = {}
    for template in templates:
        _, pooled = clip.encode_from_tokens(clip.tokenize(template.format(superclass)), return_pooled=True)
        size = dict(width=resolution, height=resolution, target_width=resolution, target_height=resolution)
        vectors[template] = model.model.encode_adm(pooled_output=pooled, crop_w=0, crop_h=0, **size).float()
    return vectors


def extra_inputs(model, x_t: torch.Tensor) -> torch.Tensor | None:
    """The channels a model reads beside the latent (None for most): an inpainting model's mask and
    masked image, as ComfyUI fills them for a sampler with no mask (everything to generate), so the
    concept is learnt for text-to-image use; pix2pix and depth models have their own defaults."""
    concat_cond = getattr(model.model, "concat_cond", None)
    return None if concat_cond is None else concat_cond(noise=x_t, device=x_t.device, latent_image=x_t)


def check_input_channels(model) -> None:
    """Refuses models whose extra input channels the host fills in no way training can reuse."""
    unet = model.model.diffusion_model
    wanted = getattr(unet, "in_channels", None)
    latent = model.model.latent_format.latent_channels
    if wanted is None or wanted == latent:
        return
    probe = torch.zeros(1, latent, 8, 8)
    given = extra_inputs(model, probe)
    if given is None or latent + given.shape[1] != wanted:
        family = type(model.model).__name__
        raise ValueError(
            f"the loaded model ({family}) reads {wanted} input channels where its latent has {latent}, "
            "and ComfyUI gives no default for the rest: train on its base model instead"
        )


def native_resolution(model) -> int:
    """The family's training resolution: 1024 for models conditioned on image size (SDXL family),
    768 for v-prediction (SD2.x 768-v), else 512."""
    if isinstance(model.model, comfy.model_base.SDXL):
        return 1024
    if model.model.model_type == comfy.model_base.ModelType.V_PREDICTION:
        return 768
    return 512


def encode_latents(model, vae, pixels: torch.Tensor) -> torch.Tensor:
    """Latents of the (un)flipped training images as the denoiser sees them, on the CPU."""
    with torch.inference_mode():
        latents = vae.encode(pixels.movedim(1, -1))
    return model.model.process_latent_in(latents.float().clone()).cpu()


class TrainingRun:
    """One training run: models, data and the state being optimised, set up once.

    `model` and `clip` are the training clones (projection edits from `state`, trainable word);
    `precision` is the dtype the denoiser computes in and its loss scaler.
    """

    def __init__(self, *args, **kwargs) -> None:
        """Takes `_set_up`'s arguments; a failure part-way closes the run before it is raised, so
        clones that already loaded do not leave their patches in force."""
        self.clones: list = []  # patchers of this run, unloaded by close()
        try:
            self._set_up(*args, **kwargs)
        except BaseException:
            self.close()
            raise

    def _set_up(
        self,
        model,
        clip,
        vae,
        pixels,
        weights,
        word,
        superclass,
        config: TrainingConfig,
        c_inv,
        resume,
        checkpointing: bool,
        precision: str = "auto",
    ) -> None:
        self.device = comfy.model_management.get_torch_device()
        dtype, why = precision_module.resolve(precision, model, self.device)
        self.precision = precision_module.Precision(dtype, self.device)
        self.config = replace(config, extra={**config.extra, "precision": self.precision.name})
        log.info("Perfusion: training computes the denoiser in %s (%s)", self.precision.name, why)
        pixels_both = torch.cat([pixels, pixels.flip(-1)])
        self.latents = encode_latents(model, vae, pixels_both)
        self.masks = None
        if weights is not None:
            both = torch.cat([weights, weights.flip(-1)])
            self.masks = normalise_mask(F.interpolate(both, size=self.latents.shape[-2:], mode="area"))
        self.n_images = pixels.shape[0]
        layers = model_patch.cross_attention_layers(model)
        encoders = text_encoder.text_encoders(clip)
        widths = [e.width for e in encoders]
        if resume is not None:
            self.state = ConceptTrainingState.resume(resume, c_inv, config.beta, config.tau, widths)
        else:
            self.state = ConceptTrainingState(
                text_encoder.input_embedding(clip, superclass),
                superclass_encoding(clip, superclass, config.templates),
                {layer.name: torch.zeros(layer.width) for layer in layers},  # W_V ī_super, set below
                c_inv,
                config.beta,
                config.tau,
                embedding_widths=widths,
            )
        with torch.no_grad():
            self.vectors = model_vectors(model, clip, superclass, config.templates, config.resolution)
        self.model = model_patch.install_source(model, self.state, key_edits=config.key_lock)
        self.clones.append(self.model)
        _own_weight_copies(self.model)
        if dtype != precision_module.model_compute_dtype(model):
            self.model.set_model_compute_dtype(dtype)  # ComfyUI casts each weight as it is used
        if checkpointing:
            checkpoint_unet(self.model)
        if _blocks_add_in_place():
            _copy_norm_inputs(self.model)
        embeddings = {e.key: p for e, p in zip(encoders, self.state.token_embeddings, strict=True)}
        self.clip = _trainable_clip(clip, word, embeddings, checkpointing)
        self.clones.append(self.clip.patcher)
        _own_weight_copies(self.clip.patcher)
        # Previews encode as generation will: the same learned embeddings on the user's CLIP, with the
        # pooled vector of the superclass prompt (SDXL), which training feeds through `y` instead.
        superclass_embeddings = text_encoder.split_embedding(
            clip, text_encoder.input_embedding(clip, superclass)
        )
        self.preview_clip = text_encoder.clip_with_concepts(
            clip, [text_encoder.ConceptWord(word, embeddings, superclass_embeddings)]
        )
        self.clones.append(self.preview_clip.patcher)
        # the training CLIP's weight copies: the two alternate at every preview, and a uuid that
        # changed in between would make ComfyUI unpatch and reload the text encoder each time
        self.preview_clip.patcher.patches_uuid = self.clip.patcher.patches_uuid
        comfy.model_management.load_models_gpu([self.model, self.clip.patcher], force_full_load=True)
        _release_inference_weights(self.model.model.diffusion_model)
        _release_inference_weights(self.clip.cond_stage_model)
        self.state.to(self.device)
        if resume is None:
            self._init_v_targets(layers)
        self.encoder = PromptEncoder(self.clip, word, embeddings)
        # The model's own sampling object: a ModelSamplingDiscrete (v-prediction...) patch included.
        self.sampling = self.model.get_model_object("model_sampling")
        self.transformer_options = comfy.patcher_extension.copy_nested_dicts(
            self.model.model_options.get("transformer_options", {})
        )

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

    def train(self, on_step: Callable[[int, float | None, TrainingRun], None] | None) -> list[float]:
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


def open_run(
    model,
    clip,
    vae,
    images: torch.Tensor,
    masks: torch.Tensor | None,
    word: str,
    superclass: str,
    config: TrainingConfig,
    *,
    covariance_prompts: int,
    gradient_checkpointing: bool = False,
    precision: str = "auto",
    resume: Concept | None = None,
) -> TrainingRun:
    """Checks the inputs and sets up a run; use it under `torch.inference_mode(False)` and
    `torch.enable_grad()` (the executor runs nodes in inference mode), as a context manager (or call
    `close()`) so the training clones are unloaded when it ends."""
    model_patch.served_layers(model, clip)
    check_input_channels(model)
    check_words(clip, word, superclass)
    if config.steps < 1:
        raise ValueError("steps must be at least 1")
    if resume is not None:
        for warning in check_compatible(resume, apply.model_signature(model, clip), source="resume"):
            log.warning(warning)
        mismatch = text_encoder.layer_mismatch(word, resume.info.clip_layer, text_encoder.encoder_layer(clip))
        if mismatch:
            raise ValueError(f"resume: {mismatch}")
    pixels, weights = prepare_images(images, masks, config.resolution)
    if config.image_templates and len(config.image_templates) != pixels.shape[0]:
        raise ValueError(
            f"captions: {len(config.image_templates)} captions for {pixels.shape[0]} images; give one per image"
        )
    with torch.no_grad():
        c_inv = covariance_cache.inverse_covariance(clip, covariance_prompts)
    return TrainingRun(
        model,
        clip,
        vae,
        pixels,
        weights,
        word,
        superclass,
        config,
        c_inv,
        resume,
        gradient_checkpointing,
        precision,
    )


def train_concept(
    model,
    clip,
    vae,
    images,
    masks,
    word: str,
    superclass: str,
    config: TrainingConfig,
    *,
    on_step: Callable[[int, float | None, TrainingRun], None] | None = None,
    **options,
) -> TrainingResult:
    """Optimises the word embedding and V targets; K stays locked to W_K ī_super (docs/method.md §3, §6).
    `options` are `open_run`'s (covariance_prompts, gradient_checkpointing, precision, resume)."""
    with torch.inference_mode(False), torch.enable_grad():
        with open_run(model, clip, vae, images, masks, word, superclass, config, **options) as run:
            before = run.evaluate()
            losses = run.train(on_step)
            after = run.evaluate()
    info = concept_info(model, clip, word, superclass, run, options.get("resume"), config.steps)
    return TrainingResult(run.state.to_concept(info), losses, before, after)


def concept_info(
    model, clip, word: str, superclass: str, run: TrainingRun, resume: Concept | None, steps: int
) -> ConceptInfo:
    """Metadata of a concept after `steps` steps of `run` (plus those of a resumed concept)."""
    config = run.config
    done = steps + (resume.info.steps if resume is not None else 0)
    return ConceptInfo(
        word=word,
        superclass=superclass,
        model_family=type(model.model.model_config).__name__,
        encoder_fingerprint=text_encoder.encoder_fingerprint(clip),
        train_beta=config.beta,
        train_tau=config.tau,
        steps=done,
        training_settings=config.as_metadata(),
        clip_layer=text_encoder.encoder_layer(clip),
        text_encoders=text_encoder.encoder_layout(clip),
        training_images=run.n_images,
    )
