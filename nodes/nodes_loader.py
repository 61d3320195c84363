"""Loader nodes: a concept file (or an in-memory CONCEPT) applied to MODEL and CLIP."""

from __future__ import annotations

from ..perfusion_core.concept_file import load_concept
from ..perfusion_core.defaults import INFERENCE_BIAS, INFERENCE_TEMPERATURE
from . import folders
from .apply import LOCK_MODES, apply_concept

CONCEPT_TYPE = "PERFUSION_CONCEPT"

_GATE_INPUTS = {
    "bias": (
        "FLOAT",
        {
            "default": INFERENCE_BIAS,
            "min": -1.0,
            "max": 2.0,
            "step": 0.01,
            "tooltip": "Gate bias β. Lower = stronger concept (more fidelity to the training images); "
            "higher = weaker concept (more freedom for the rest of the prompt). "
            "Typical: 0.6–0.75 with local key-lock, 0.4–0.6 with global.",
        },
    ),
    "temperature": (
        "FLOAT",
        {
            "default": INFERENCE_TEMPERATURE,
            "min": 0.01,
            "max": 1.0,
            "step": 0.01,
            "tooltip": "Gate temperature τ: how sharply the gate switches between unrelated tokens (off) "
            f"and the concept word (on). {INFERENCE_TEMPERATURE:g} is the paper's inference setting.",
        },
    ),
    "key_lock": (
        list(LOCK_MODES),
        {
            "default": "local",
            "tooltip": "local: each cross-attention key of the concept word is locked to its superclass "
            "(the trained behaviour). global: every key is computed from the prompt with the concept word "
            "replaced by its superclass word, for better text alignment. off: K unedited (only for "
            "concepts trained with key_lock off, an ablation; benchmarks/README.md).",
        },
    ),
}

# Optional, so API prompts and workflows saved before them keep the widget's constant bias.
BIAS_MODES = ("widget", "suggested")
BIAS_SCHEDULES = ("constant", "linear")
_OPTIONAL_INPUTS = {
    "bias_mode": (
        list(BIAS_MODES),
        {
            "default": "widget",
            "tooltip": "widget: the bias above. suggested: the concept's own suggested bias for this key "
            "lock (written by 'Choose Perfusion Bias', or the training node with a CLIP vision input) in "
            "its place; with a linear schedule, where the schedule starts.",
        },
    ),
    "bias_schedule": (
        list(BIAS_SCHEDULES),
        {
            "default": "constant",
            "tooltip": "constant: bias at every sampling step. linear: bias at the first (noisiest) step, "
            "moving to bias_end at the last, counted as ControlNet's start/end percents are. A higher "
            "bias early and a lower one late keeps the superclass's layout and adds the identity late.",
        },
    ),
    "bias_end": (
        "FLOAT",
        {
            **_GATE_INPUTS["bias"][1],
            "tooltip": "Gate bias at the last sampling step, with bias_schedule = linear (else unused).",
        },
    ),
}

_CONCEPT_NAME_TOOLTIP = {"tooltip": "A concept file in models/perfusion (.safetensors, ~40 KB)."}

_MODEL_CLIP_INPUTS = {
    "model": (
        "MODEL",
        {"tooltip": "The SD1.x, SD2.x or SDXL-family model to patch (the input is left unchanged)."},
    ),
    "clip": ("CLIP", {"tooltip": "The text encoder of that model; the concept word is added to a clone."}),
}

_DESCRIPTION_TAIL = (
    " Write the concept word in any prompt encoded with the returned CLIP. Chain several loaders to "
    "combine concepts; they are applied jointly, one edit per cross-attention layer. With key_lock = "
    "global, encode both the positive and the negative prompt with the returned CLIP (a stock "
    "CLIPTextEncode is enough)."
)


def chosen_bias(concept, bias: float, bias_mode: str, key_lock: str) -> float:
    """The bias to apply: the widget's, or the concept's suggestion for `key_lock` ('off': local's)."""
    if bias_mode not in BIAS_MODES:
        raise ValueError(f"bias_mode must be one of {BIAS_MODES}, got '{bias_mode}'")
    if bias_mode == "widget":
        return bias
    info = concept.info
    return info.suggested_beta_global if key_lock == "global" else info.suggested_beta_local


def schedule_end(bias_schedule: str, bias_end: float | None) -> float | None:
    """The bias at the last step for `apply_concept` (None: constant), checking the two widgets."""
    if bias_schedule not in BIAS_SCHEDULES:
        raise ValueError(f"bias_schedule must be one of {BIAS_SCHEDULES}, got '{bias_schedule}'")
    if bias_schedule == "constant":
        return None
    if bias_end is None:
        raise ValueError("bias_schedule 'linear' needs bias_end: the gate bias at the last step")
    return float(bias_end)


def apply_with_options(
    model,
    clip,
    concept,
    bias: float,
    temperature: float,
    key_lock: str,
    source: str,
    bias_mode: str = "widget",
    bias_schedule: str = "constant",
    bias_end: float | None = None,
):
    """apply_concept with the loaders' optional inputs resolved."""
    start = chosen_bias(concept, bias, bias_mode, key_lock)
    end = schedule_end(bias_schedule, bias_end)
    return apply_concept(model, clip, concept, start, temperature, key_lock, source=source, bias_end=end)


class PerfusionConceptLoader:
    DESCRIPTION = (
        "Loads a Perfusion concept file from models/perfusion and patches the model's cross-attention "
        "K/V projections with its gated rank-1 edit." + _DESCRIPTION_TAIL
    )
    CATEGORY = "perfusion"
    FUNCTION = "load"
    RETURN_TYPES = ("MODEL", "CLIP")
    RETURN_NAMES = ("model", "clip")
    OUTPUT_TOOLTIPS = ("The patched model (a clone).", "The CLIP that knows the concept word (a clone).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                **_MODEL_CLIP_INPUTS,
                "concept_name": (folders.concept_names(), _CONCEPT_NAME_TOOLTIP),
                **_GATE_INPUTS,
            },
            "optional": _OPTIONAL_INPUTS,
        }

    @classmethod
    def IS_CHANGED(cls, concept_name, **_):
        return folders.file_state(concept_name)

    def load(self, model, clip, concept_name, bias, temperature, key_lock, **optional):
        concept = load_concept(folders.resolve(concept_name))
        return apply_with_options(model, clip, concept, bias, temperature, key_lock, concept_name, **optional)


class PerfusionConceptFile:
    DESCRIPTION = (
        "Reads a Perfusion concept file as a CONCEPT without applying it: to resume training from a "
        "checkpoint, or to apply it with 'Apply Perfusion Concept'."
    )
    CATEGORY = "perfusion"
    FUNCTION = "load"
    RETURN_TYPES = (CONCEPT_TYPE,)
    RETURN_NAMES = ("concept",)
    OUTPUT_TOOLTIPS = ("The concept (word embedding, i*, u, superclass encoding, V targets).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"concept_name": (folders.concept_names(), _CONCEPT_NAME_TOOLTIP)}}

    @classmethod
    def IS_CHANGED(cls, concept_name):
        return folders.file_state(concept_name)

    def load(self, concept_name):
        return (load_concept(folders.resolve(concept_name)),)


class PerfusionApplyConcept:
    DESCRIPTION = (
        "Applies an in-memory Perfusion CONCEPT (from the training node) to a model, so training and "
        "generation work in one graph." + _DESCRIPTION_TAIL
    )
    CATEGORY = "perfusion"
    FUNCTION = "apply"
    RETURN_TYPES = ("MODEL", "CLIP")
    RETURN_NAMES = ("model", "clip")
    OUTPUT_TOOLTIPS = PerfusionConceptLoader.OUTPUT_TOOLTIPS

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                **_MODEL_CLIP_INPUTS,
                "concept": (CONCEPT_TYPE, {"tooltip": "A concept from 'Train Perfusion Concept'."}),
                **_GATE_INPUTS,
            },
            "optional": _OPTIONAL_INPUTS,
        }

    def apply(self, model, clip, concept, bias, temperature, key_lock, **optional):
        source = f"concept '{concept.word}'"
        return apply_with_options(model, clip, concept, bias, temperature, key_lock, source, **optional)
