"""Training node: key-locked Perfusion optimisation inside the graph (docs/method.md §3, §6)."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from ..perfusion_core.concept_writer import save_concept
from ..perfusion_core.training import DEFAULT_TEMPLATES, TrainingConfig, caption_templates, parse_templates
from . import folders, previews, trainer
from .bias_choice import BiasSearch, clip_vision_embedder, sample_curve, with_suggested_bias
from .host_support import require_host
from .list_inputs import one_each
from .loss_plot import loss_curve_image
from .nodes_loader import CONCEPT_TYPE
from .precision import PRECISIONS

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
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The base model (left unchanged)."}),
                "clip": ("CLIP", {"tooltip": "Its text encoder (left unchanged)."}),
                "vae": ("VAE", {"tooltip": "Encodes the training images to latents."}),
                "images": (
                    "IMAGE",
                    {
                        "tooltip": "3–10 images of the object: a batch, or a dataset node's list (e.g. "
                        "Load Image Dataset from Folder). Any sizes: each image is centre-cropped to a "
                        "square and resized to the training resolution on its own."
                    },
                ),
                "concept_word": (
                    "STRING",
                    {"default": "hugsy", "tooltip": "A new made-up word that will mean your object."},
                ),
                "superclass": (
                    "STRING",
                    {
                        "default": "teddy",
                        "tooltip": "What the object is, as one vocabulary word (keys lock to it).",
                    },
                ),
                "steps": ("INT", {"default": 400, "min": 1, "max": 100000, "tooltip": "Optimizer steps."}),
                "batch_size": (
                    "INT",
                    {"default": 4, "min": 1, "max": 64, "tooltip": "Images per micro-batch."},
                ),
                "grad_accumulation": (
                    "INT",
                    {"default": 4, "min": 1, "max": 64, "tooltip": "Micro-batches per optimizer step."},
                ),
                "lr_v": (
                    "FLOAT",
                    {
                        "default": 0.03,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.001,
                        "tooltip": "Learning rate of the V targets.",
                    },
                ),
                "lr_embedding": (
                    "FLOAT",
                    {
                        "default": 0.006,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.0001,
                        "tooltip": "Learning rate of the word embedding.",
                    },
                ),
                "train_bias": (
                    "FLOAT",
                    {
                        "default": 0.75,
                        "min": -1.0,
                        "max": 2.0,
                        "step": 0.01,
                        "tooltip": "Gate β while training.",
                    },
                ),
                "train_temperature": (
                    "FLOAT",
                    {
                        "default": 0.10,
                        "min": 0.01,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "Gate τ while training.",
                    },
                ),
                "resolution": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 2048,
                        "step": 64,
                        "tooltip": "Training image size; 0 = the model's native size (512 for SD1.x, "
                        "768 for v-prediction SD2.x, 1024 for the SDXL family).",
                    },
                ),
                "flip": (
                    "BOOLEAN",
                    {"default": True, "tooltip": "Random horizontal flips (off for asymmetric objects)."},
                ),
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 0xFFFFFFFFFFFFFFFF,
                        # declared, not only implied by the name "seed": the 0.33 frontend counts a
                        # saved node's values by it, and shifts them when it is missing
                        "control_after_generate": True,
                        "tooltip": "Same seed, same device: same concept.",
                    },
                ),
                "templates": (
                    "STRING",
                    {
                        "multiline": True,
                        "default": "\n".join(DEFAULT_TEMPLATES),
                        "tooltip": "Training prompts, one per line; '{}' is the word.",
                    },
                ),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "Optional object masks, one per image (zero-shot mask loss)."}),
                "captions": (
                    "STRING",
                    {
                        "forceInput": True,
                        "tooltip": "Optional captions, one per image (e.g. from Load Image and Text Dataset "
                        "from Folder): each image trains with its caption instead of the templates. A "
                        "caption without the concept word gets it in place of its first superclass word "
                        "('a teddy on a bench' -> 'a hugsy on a bench'), else as 'a photo of a hugsy, "
                        "<caption>'.",
                    },
                ),
                "resume": (
                    CONCEPT_TYPE,
                    {"tooltip": "Continue training this concept instead of starting anew."},
                ),
                "gradient_checkpointing": (
                    "BOOLEAN",
                    {"default": False, "tooltip": "Recompute activations in backward: less memory, slower."},
                ),
                "save_every": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 100000,
                        "tooltip": "Write a checkpoint every N steps (0 = off).",
                    },
                ),
                "checkpoint_name": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "Checkpoint file in models/perfusion, replaced at each save (default: <concept word>_checkpoint).",
                    },
                ),
                "precision": (
                    list(PRECISIONS),
                    {
                        "default": "auto",
                        "tooltip": "Dtype the denoiser trains in (trained values stay fp32). auto: the dtype "
                        "ComfyUI samples this model in on this device (fp16 on most GPUs, fp32 on a CPU); fp16 "
                        "uses dynamic loss scaling. On a CPU keep fp32: half-precision compute was several times slower there.",
                    },
                ),
                "covariance_prompts": (
                    "INT",
                    {
                        "default": 2000,
                        "min": 64,
                        "max": 100000,
                        "tooltip": "Prompts for the text-encoding covariance (cached per model).",
                    },
                ),
                "preview_every": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 100000,
                        "tooltip": "Sample the validation prompts at step 0 and every N steps (and the last), "
                        f"shown on this node and returned as 'previews' (0 = off; at most {previews.MAX_POINTS} "
                        "preview steps: a smaller N is widened).",
                    },
                ),
                "validation_prompts": (
                    "STRING",
                    {
                        "multiline": True,
                        "default": previews.DEFAULT_VALIDATION_PROMPTS,
                        "tooltip": "Preview prompts, one per line; '{}' is the concept word. Prompt k uses "
                        f"seed k at every preview step. At most {previews.MAX_PROMPTS}.",
                    },
                ),
                "preview_size": (
                    "INT",
                    {
                        "default": 512,
                        "min": 64,
                        "max": 2048,
                        "step": 64,
                        "tooltip": "Preview image size in pixels (square): 512 for SD1.x, 768 for SD2.x "
                        "768-v, 1024 for the SDXL family (their own sizes; smaller ones change the picture).",
                    },
                ),
                "preview_steps": (
                    "INT",
                    {
                        "default": 15,
                        "min": 1,
                        "max": 50,
                        "tooltip": f"Sampler steps per preview ({previews.SAMPLER}, {previews.SCHEDULER} "
                        f"scheduler, cfg {previews.CFG:g}, empty negative, the concept at bias 0.70 / "
                        "temperature 0.15 as Apply Perfusion Concept uses it).",
                    },
                ),
                "key_lock": (
                    "BOOLEAN",
                    {
                        "default": True,
                        "tooltip": "Lock the concept word's keys to the superclass (Perfusion). Off trains "
                        "with K unedited, the ablation the lock is measured against; load such a concept "
                        "with key_lock 'off'.",
                    },
                ),
                "weight_decay": (
                    "FLOAT",
                    {
                        "default": TrainingConfig.weight_decay,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.001,
                        "tooltip": "AdamW weight decay of the trained tensors. It pulls the V targets toward "
                        "0, not toward the superclass's values where they start, so the default is none.",
                    },
                ),
                "clip_vision": (
                    "CLIP_VISION",
                    {
                        "tooltip": "Connect a CLIP vision model to choose the concept's suggested bias after "
                        "training, as 'Choose Perfusion Bias' does with its defaults (local key lock) at the "
                        "training resolution. Takes (1 + biases) x seeds extra samplings.",
                    },
                ),
            },
        }

    def train(self, images, mask=None, captions=None, **inputs):
        """Lists in (INPUT_IS_LIST): `images`, `mask` and `captions` may hold many items (all train one
        concept); every other input must be one value."""
        single = one_each(inputs, listed="images, mask and captions")
        return self._train(images=images, mask=mask, captions=captions, **single)

    def _train(
        self,
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
        mask=None,
        captions=None,
        resume=None,
        gradient_checkpointing=False,
        save_every=0,
        checkpoint_name="",
        covariance_prompts=2000,
        precision="auto",
        preview_every=0,
        validation_prompts=previews.DEFAULT_VALIDATION_PROMPTS,
        preview_size=512,
        preview_steps=15,
        key_lock=True,
        weight_decay=TrainingConfig.weight_decay,
        clip_vision=None,
    ):
        require_host()
        concept_word, superclass = concept_word.strip(), superclass.strip()
        image_templates = caption_templates(captions, concept_word, superclass) if captions else ()
        if resolution == 0:
            resolution = trainer.native_resolution(model)
        config = TrainingConfig(
            steps=steps,
            batch_size=batch_size,
            grad_accumulation=grad_accumulation,
            lr_v=lr_v,
            lr_embedding=lr_embedding,
            beta=train_bias,
            tau=train_temperature,
            flip_probability=0.5 if flip else 0.0,
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
                    info = trainer.concept_info(model, clip, concept_word, superclass, run, resume, step)
                    save_concept(run.state.to_concept(info), target, overwrite=True)
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
        result = trainer.train_concept(
            model,
            clip,
            vae,
            images,
            mask,
            concept_word,
            superclass,
            config,
            covariance_prompts=covariance_prompts,
            gradient_checkpointing=gradient_checkpointing,
            precision=precision,
            resume=resume,
            on_step=each_step if callbacks else None,
        )
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
