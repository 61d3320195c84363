"""What the denoiser reads while a concept trains: the training images' latents, the prompts'
encodings with the concept token found in each, the superclass encoding ī_super, SDXL's vector
input `y` and the extra channels some models take; and the size a model family trains at."""

from __future__ import annotations

from collections.abc import Callable

import comfy.model_base
import torch

from . import text_encoder


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
