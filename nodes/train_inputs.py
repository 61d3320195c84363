"""The Train node's inputs: widgets, tooltips and defaults.

Each default is written here once, or read from where the method defines it (TrainingConfig,
TrainingJob, perfusion_core.defaults): `PerfusionTrainConcept.train` fills an optional input a graph
leaves out from OPTIONAL_DEFAULTS, so the widget and the run cannot disagree.
"""

from __future__ import annotations

from ..perfusion_core.defaults import INFERENCE_BIAS, INFERENCE_TEMPERATURE
from ..perfusion_core.training import DEFAULT_TEMPLATES, TrainingConfig
from ..perfusion_core.training_job import TrainingJob
from . import previews
from .nodes_loader import CONCEPT_TYPE
from .precision import PRECISIONS

REQUIRED = {
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
    "steps": (
        "INT",
        {"default": TrainingConfig.steps, "min": 1, "max": 100000, "tooltip": "Optimizer steps."},
    ),
    "batch_size": (
        "INT",
        {"default": TrainingConfig.batch_size, "min": 1, "max": 64, "tooltip": "Images per micro-batch."},
    ),
    "grad_accumulation": (
        "INT",
        {
            "default": TrainingConfig.grad_accumulation,
            "min": 1,
            "max": 64,
            "tooltip": "Micro-batches per optimizer step.",
        },
    ),
    "lr_v": (
        "FLOAT",
        {
            "default": TrainingConfig.lr_v,
            "min": 0.0,
            "max": 1.0,
            "step": 0.001,
            "tooltip": "Learning rate of the V targets.",
        },
    ),
    "lr_embedding": (
        "FLOAT",
        {
            "default": TrainingConfig.lr_embedding,
            "min": 0.0,
            "max": 1.0,
            "step": 0.0001,
            "tooltip": "Learning rate of the word embedding.",
        },
    ),
    "train_bias": (
        "FLOAT",
        {
            "default": TrainingConfig.beta,
            "min": -1.0,
            "max": 2.0,
            "step": 0.01,
            "tooltip": "Gate β while training.",
        },
    ),
    "train_temperature": (
        "FLOAT",
        {
            "default": TrainingConfig.tau,
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
            "default": TrainingConfig.seed,
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
}

OPTIONAL = {
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
        {
            "default": TrainingJob.gradient_checkpointing,
            "tooltip": "Recompute activations in backward: less memory, slower.",
        },
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
            "default": TrainingJob.precision,
            "tooltip": "Dtype the denoiser trains in (trained values stay fp32). auto: the dtype "
            "ComfyUI samples this model in on this device (fp16 on most GPUs, fp32 on a CPU); fp16 "
            "uses dynamic loss scaling. On a CPU keep fp32: half-precision compute was several times slower there.",
        },
    ),
    "covariance_prompts": (
        "INT",
        {
            "default": TrainingJob.covariance_prompts,
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
            f"scheduler, cfg {previews.CFG:g}, empty negative, the concept at bias "
            f"{INFERENCE_BIAS:.2f} / temperature {INFERENCE_TEMPERATURE:.2f} as Apply Perfusion Concept "
            "uses it).",
        },
    ),
    "key_lock": (
        "BOOLEAN",
        {
            "default": TrainingConfig.key_lock,
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
}

# Inputs that take a dataset node's list of values (INPUT_IS_LIST): passed on as lists.
LISTED = ("images", "mask", "captions")

# What an optional input is when a graph leaves it out: its widget's default (None for a link).
OPTIONAL_DEFAULTS = {
    name: options.get("default") for name, (_, options) in OPTIONAL.items() if name not in LISTED
}
