"""Training node: key-locked Perfusion optimisation inside the graph (docs/method.md §3, §6)."""

from __future__ import annotations

import logging
import time
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
        single = one_each(inputs, listed="images, mask and captions")
        settings = {**train_inputs.OPTIONAL_DEFAULTS, **single}
        return self._train(images=images, mask=mask, captions=captions, **settings)

    def _train(
        self,
        *,
        model,
        clip,
        vae,
        images,
        concept_word,
        superclass,
        steps,
        batch_size,
        grad_accumulation,
        lr_v,
        lr_embedding,
        train_bias,
        train_temperature,
        resolution,
        flip,
        seed,
        templates,
        mask,
        captions,
        resume,
        gradient_checkpointing,
        save_every,
        checkpoint_name,
        covariance_prompts,
        precision,
        preview_every,
        validation_prompts,
        preview_size,
        preview_steps,
        key_lock,
        weight_decay,
        clip_vision,
    ):
        require_host()
        concept_word, superclass = concept_word.strip(), superclass.strip()
        image_templates = caption_templates(captions, concept_word, superclass) if captions else ()
        if resolution == 0:
            resolution = native_resolution(model)
        config = TrainingConfig(
            steps=steps,
            batch_size=batch_size,
            grad_accumulation=grad_accumulation,
            lr_v=lr_v,
            lr_embedding=lr_embedding,
            beta=train_bias,
            tau=train_temperature,
            flip_probability=TrainingConfig.flip_probability if flip else 0.0,
            resolution=resolution,
            seed=seed,
            templates=tuple(dict.fromkeys(image_templates)) or parse_templates(templates),
            image_templates=image_templates,
            key_lock=bool(key_lock),
            weight_decay=weight_decay,
        )
        if resume is not None and (resume.word != concept_word or resume.info.superclass != superclass):
            raise ValueError(
                f"resume: the concept is '{resume.word}' ({resume.info.superclass}), not "
                f"'{concept_word}' ({superclass})"
            )
        callbacks = []
        if save_every > 0:
            target = concept_path(checkpoint_name.strip() or f"{concept_word}_checkpoint", "checkpoint_name")

            def on_step(step, _loss, run):
                if step > 0 and step % save_every == 0 and step < config.steps:
                    save_concept(run.concept(step), target, overwrite=True)
                    log.info("Perfusion: checkpoint at step %d written to %s", step, target)

            callbacks.append(on_step)
        preview = None
        if preview_every > 0:
            beta, tau = previews.inference_gate(resume)
            settings = previews.PreviewSettings(
                previews.validation_prompts(validation_prompts, concept_word),
                preview_every,
                preview_size,
                preview_steps,
                beta,
                tau,
            )
            preview = previews.TrainingPreviews(vae, settings, config.steps)
            callbacks.append(preview)

        def each_step(step, loss, run):
            for callback in callbacks:
                callback(step, loss, run)

        started = time.perf_counter()
        job = TrainingJob(
            word=concept_word,
            superclass=superclass,
            images=images,
            config=config,
            masks=mask,
            resume=resume,
            covariance_prompts=covariance_prompts,
            gradient_checkpointing=gradient_checkpointing,
            precision=precision,
        )
        result = trainer.train_concept(model, clip, vae, job, on_step=each_step if callbacks else None)
        summary = (
            f"{concept_word} ({superclass}): {len(result.losses)} steps; loss on the training images "
            f"{result.eval_before:.5f} -> {result.eval_after:.5f}"
        )
        if preview is not None:
            summary += f"; {preview.describe()}"
            total = time.perf_counter() - started
            log.info(
                "Perfusion: previews took %.1f s (%d images at %d px, %d sampler steps each), the rest of "
                "training %.1f s (%.0f%% of the time on previews)",
                preview.seconds,
                preview.samplings,
                preview_size,
                preview_steps,
                total - preview.seconds,
                100 * preview.seconds / max(total, 1e-9),
            )
        concept = result.concept
        if clip_vision is not None:
            search = BiasSearch(sampling=replace(BiasSearch.sampling, size=config.resolution))
            embed = clip_vision_embedder(clip_vision)
            chosen = sample_curve(model, clip, vae, concept, images, embed, search)[0].chosen()
            concept = with_suggested_bias(concept, chosen.bias, search)
            summary += f"; suggested bias {chosen.bias:.2f} (chosen from {search.seeds} seeds per bias)"
        log.info("Perfusion: %s", summary)
        previewed = preview.output() if preview is not None else previews.placeholder()
        return {
            "ui": {"text": [summary], "perfusion_eval": [result.eval_before, result.eval_after]},
            "result": (concept, loss_curve_image(result.losses), {"loss": result.losses}, previewed),
        }


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
