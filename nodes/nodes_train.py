"""Training node: key-locked Perfusion optimisation inside the graph (docs/method.md §3, §6)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

from ..perfusion_core.concept_writer import save_concept
from ..perfusion_core.training import TrainingConfig, caption_templates, parse_templates
from ..perfusion_core.training_job import TrainingJob
from . import folders, previews, train_inputs, trainer
from .bias_choice import BiasSearch, clip_vision_embedder, sample_curve, with_suggested_bias
from .denoiser_inputs import native_resolution
from .host_support import require_host
from .list_inputs import one_each
from .loss_plot import loss_curve_image
from .nodes_loader import CONCEPT_TYPE

log = logging.getLogger("comfyui-perfusion")


def concept_path(name: str, what: str) -> str:
    """models/perfusion/<name>.safetensors for a plain file name from a widget."""
    return folders.new_file(folders.FOLDER, name, what)


class PerfusionTrainConcept:
    DESCRIPTION = (
        "Trains a Perfusion concept from a few images of one object: a learned word embedding plus one "
        "V target per cross-attention layer, with keys locked to the superclass word. Runs on ComfyUI's "
        "device with a progress bar; Cancel stops it within one step. Connect 'concept' to 'Apply "
        "Perfusion Concept' to generate in the same graph, or to 'Save Perfusion Concept'. With "
        "preview_every > 0 it samples the validation prompts at step 0 and every N steps, shows them on "
        "the node while it trains and returns them as 'previews'."
    )
    CATEGORY = "perfusion/training"
    FUNCTION = "train"
    # A dataset node ("Load Image Dataset from Folder") sends lists, one image each: they all train
    # one concept. Every other input then arrives as a one-item list too (see train()).
    INPUT_IS_LIST = True
    OUTPUT_NODE = True  # shows the before/after loss summary; runs even when only previewed
    RETURN_TYPES = (CONCEPT_TYPE, "IMAGE", "LOSS_MAP", "IMAGE")
    RETURN_NAMES = ("concept", "loss_curve", "loss_map", "previews")
    OUTPUT_TOOLTIPS = (
        "The trained concept (in memory).",
        "The loss per optimizer step as an image (connect a Preview Image).",
        "The loss values, for ComfyUI's 'Plot Loss Graph' node.",
        "The preview images: one per (preview step, validation prompt), step by step (one black 64x64 "
        "image when preview_every is 0).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": dict(train_inputs.REQUIRED), "optional": dict(train_inputs.OPTIONAL)}

    def train(self, images, mask=None, captions=None, **inputs):
        """Lists in (INPUT_IS_LIST): `images`, `mask` and `captions` may hold many items (all train one
        concept); every other input must be one value."""
        require_host()
        w = {**train_inputs.OPTIONAL_DEFAULTS, **one_each(inputs, listed="images, mask and captions")}
        job = training_job(w, images, mask, captions)
        preview = training_previews(w, job)
        callbacks = [c for c in (checkpoint_writer(w, job), preview) if c is not None]

        def each_step(step, loss, run):
            for callback in callbacks:
                callback(step, loss, run)

        started = time.perf_counter()
        result = trainer.train_concept(
            w["model"], w["clip"], w["vae"], job, on_step=each_step if callbacks else None
        )
        summary = (
            f"{job.word} ({job.superclass}): {len(result.losses)} steps; loss on the training images "
            f"{result.eval_before:.5f} -> {result.eval_after:.5f}"
        )
        if preview is not None:
            summary += f"; {preview.describe()}"
            log_preview_time(preview, time.perf_counter() - started)
        concept = result.concept
        if w["clip_vision"] is not None:
            search = BiasSearch(sampling=replace(BiasSearch.sampling, size=job.config.resolution))
            embed = clip_vision_embedder(w["clip_vision"])
            chosen = sample_curve(w["model"], w["clip"], w["vae"], concept, images, embed, search)[0].chosen()
            concept = with_suggested_bias(concept, chosen.bias, search)
            summary += f"; suggested bias {chosen.bias:.2f} (chosen from {search.seeds} seeds per bias)"
        log.info("Perfusion: %s", summary)
        previewed = preview.output() if preview is not None else previews.placeholder()
        return {
            "ui": {"text": [summary], "perfusion_eval": [result.eval_before, result.eval_after]},
            "result": (concept, loss_curve_image(result.losses), {"loss": result.losses}, previewed),
        }


# The helpers below read `w`: the Train node's inputs by name, every optional one filled in.


def training_job(w: dict, images: list, mask: list | None, captions: list | None) -> TrainingJob:
    """The widgets as the method's terms: words stripped, captions as templates, resolution 0 as the
    model's native one, the flip switch as a probability."""
    word, superclass = w["concept_word"].strip(), w["superclass"].strip()
    image_templates = caption_templates(captions, word, superclass) if captions else ()
    config = TrainingConfig(
        steps=w["steps"],
        batch_size=w["batch_size"],
        grad_accumulation=w["grad_accumulation"],
        lr_v=w["lr_v"],
        lr_embedding=w["lr_embedding"],
        beta=w["train_bias"],
        tau=w["train_temperature"],
        flip_probability=TrainingConfig.flip_probability if w["flip"] else 0.0,
        resolution=w["resolution"] or native_resolution(w["model"]),
        seed=w["seed"],
        templates=tuple(dict.fromkeys(image_templates)) or parse_templates(w["templates"]),
        image_templates=image_templates,
        key_lock=bool(w["key_lock"]),
        weight_decay=w["weight_decay"],
    )
    resume = w["resume"]
    if resume is not None and (resume.word != word or resume.info.superclass != superclass):
        raise ValueError(
            f"resume: the concept is '{resume.word}' ({resume.info.superclass}), not '{word}' ({superclass})"
        )
    return TrainingJob(
        word=word,
        superclass=superclass,
        images=images,
        config=config,
        masks=mask,
        resume=resume,
        covariance_prompts=w["covariance_prompts"],
        gradient_checkpointing=w["gradient_checkpointing"],
        precision=w["precision"],
    )


def checkpoint_writer(w: dict, job: TrainingJob) -> Callable | None:
    """A step callback that saves the concept every `save_every` steps (None when 0), so a long run
    that stops early leaves its latest state."""
    every = w["save_every"]
    if every <= 0:
        return None
    target = concept_path(w["checkpoint_name"].strip() or f"{job.word}_checkpoint", "checkpoint_name")

    def on_step(step, _loss, run):
        if step > 0 and step % every == 0 and step < job.config.steps:
            save_concept(run.concept(step), target, overwrite=True)
            log.info("Perfusion: checkpoint at step %d written to %s", step, target)

    return on_step


def training_previews(w: dict, job: TrainingJob) -> previews.TrainingPreviews | None:
    """The validation-prompt previews every `preview_every` steps (None when 0), sampled at the gate
    generation will use."""
    if w["preview_every"] <= 0:
        return None
    beta, tau = previews.inference_gate(job.resume)
    settings = previews.PreviewSettings(
        previews.validation_prompts(w["validation_prompts"], job.word),
        w["preview_every"],
        w["preview_size"],
        w["preview_steps"],
        beta,
        tau,
    )
    return previews.TrainingPreviews(w["vae"], settings, job.config.steps)


def log_preview_time(preview: previews.TrainingPreviews, total: float) -> None:
    log.info(
        "Perfusion: previews took %.1f s (%d images at %d px, %d sampler steps each), the rest of "
        "training %.1f s (%.0f%% of the time on previews)",
        preview.seconds,
        preview.samplings,
        preview.settings.size,
        preview.settings.steps,
        total - preview.seconds,
        100 * preview.seconds / max(total, 1e-9),
    )


class PerfusionSaveConcept:
    DESCRIPTION = (
        "Writes a concept to models/perfusion/<name>.safetensors (about 40 KB for SD1.5, 210 KB for SDXL), atomically: an "
        "interrupted save never leaves a half file, and an existing file is only replaced when "
        "'overwrite' is on. The loader's list shows it after a refresh (R)."
    )
    CATEGORY = "perfusion/training"
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "concept": (CONCEPT_TYPE, {"tooltip": "The concept to save."}),
                "name": (
                    "STRING",
                    {"default": "my_concept", "tooltip": "File name (no folders), e.g. 'hugsy_teddy'."},
                ),
                "overwrite": (
                    "BOOLEAN",
                    {"default": False, "tooltip": "Replace an existing file of that name."},
                ),
            }
        }

    def save(self, concept, name, overwrite):
        path = concept_path(name.strip(), "name")
        try:
            save_concept(concept, path, overwrite=overwrite)
        except FileExistsError:
            raise folders.name_taken(name, path) from None
        return {"ui": {"text": [f"saved {path}"]}}
