"""Choose Perfusion Bias: samples a concept across a bias grid and writes the chosen operating point
into the concept's suggested settings (the loader's bias_mode 'suggested' uses it)."""

from __future__ import annotations

import logging
from dataclasses import fields

import comfy.samplers

from .bias_choice import BiasSearch, clip_vision_embedder, sample_curve, with_suggested_bias
from .bias_curve_image import curve_image
from .host_support import require_host
from .list_inputs import one_each
from .nodes_loader import _GATE_INPUTS, CONCEPT_TYPE
from .sampling import Sampling

log = logging.getLogger("comfyui-perfusion")
_SEARCH = {f.name: f.default for f in fields(BiasSearch)}
_SAMPLING = {f.name: f.default for f in fields(Sampling) if f.name not in ("size", "steps")}
_BIAS = {"min": -1.0, "max": 2.0, "step": 0.05}


class PerfusionChooseBias:
    DESCRIPTION = (
        "Chooses a concept's gate bias from images: samples the concept at every bias of a grid with a few "
        "fixed seeds, and the same seeds with the superclass word, and scores them with a CLIP vision model "
        "(image tower only): fidelity = similarity to the training images, alignment = similarity to the "
        "superclass image of the same seed. Both are read as shares of what the grid spans (fidelity as its "
        "gain over the superclass images), and the chosen bias has the largest product of the two: the "
        "curve's knee. It is written into the "
        "concept's suggested bias: save the concept, and set the loader's bias_mode to 'suggested'."
    )
    CATEGORY = "perfusion/training"
    FUNCTION = "choose"
    INPUT_IS_LIST = True
    RETURN_TYPES = (CONCEPT_TYPE, "FLOAT", "IMAGE", "IMAGE")
    RETURN_NAMES = ("concept", "bias", "curve", "samples")
    OUTPUT_TOOLTIPS = (
        "The concept with the chosen bias (and this temperature) as its suggestion for this key lock.",
        "The chosen bias.",
        "Fidelity gain and alignment over the grid, the chosen bias marked.",
        "The samples as one batch: the superclass prompt's seeds, then each bias's, in grid order.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The model the concept was trained on (unpatched)."}),
                "clip": ("CLIP", {"tooltip": "Its text encoder (unpatched)."}),
                "vae": ("VAE", {}),
                "clip_vision": (
                    "CLIP_VISION",
                    {"tooltip": "A CLIP vision model (models/clip_vision, e.g. the one IP-Adapter uses)."},
                ),
                "concept": (CONCEPT_TYPE, {"tooltip": "The concept (from training or a concept file)."}),
                "images": (
                    "IMAGE",
                    {"tooltip": "The concept's training images (fidelity is measured to them)."},
                ),
                "key_lock": (["local", "global"], {"default": _SEARCH["key_lock"]}),
                "bias_min": ("FLOAT", {**_BIAS, "default": _SEARCH["bias_min"]}),
                "bias_max": ("FLOAT", {**_BIAS, "default": _SEARCH["bias_max"]}),
                "bias_step": (
                    "FLOAT",
                    {"default": _SEARCH["bias_step"], "min": 0.01, "max": 1.0, "step": 0.01},
                ),
                "temperature": _GATE_INPUTS["temperature"],
                "seeds": (
                    "INT",
                    {"default": _SEARCH["seeds"], "min": 1, "max": 16, "tooltip": "Samples per bias."},
                ),
                "seed": ("INT", {"default": _SEARCH["seed"], "min": 0, "max": 2**31 - 1}),
                "prompt": (
                    "STRING",
                    {
                        "default": _SEARCH["prompt"],
                        "tooltip": "'{}' is the concept word, or the superclass word.",
                    },
                ),
                "steps": ("INT", {"default": _SEARCH["sampling"].steps, "min": 1, "max": 200}),
                "cfg": ("FLOAT", {"default": _SAMPLING["cfg"], "min": 0.0, "max": 30.0, "step": 0.1}),
                "sampler_name": (comfy.samplers.KSampler.SAMPLERS, {"default": _SAMPLING["sampler"]}),
                "scheduler": (comfy.samplers.KSampler.SCHEDULERS, {"default": _SAMPLING["scheduler"]}),
                "resolution": (
                    "INT",
                    {"default": _SEARCH["sampling"].size, "min": 64, "max": 2048, "step": 8},
                ),
            }
        }

    def choose(self, images, **inputs):
        """Lists in (INPUT_IS_LIST): `images` may hold several batches; every other input is one value."""
        require_host()
        v = one_each(inputs, listed="images")
        search = BiasSearch(
            bias_min=v["bias_min"],
            bias_max=v["bias_max"],
            bias_step=v["bias_step"],
            seeds=v["seeds"],
            seed=v["seed"],
            prompt=v["prompt"],
            temperature=v["temperature"],
            key_lock=v["key_lock"],
            sampling=Sampling(v["resolution"], v["steps"], v["cfg"], v["sampler_name"], v["scheduler"]),
        )
        concept = v["concept"]
        embed = clip_vision_embedder(v["clip_vision"])
        curve, samples = sample_curve(v["model"], v["clip"], v["vae"], concept, images, embed, search)
        chosen = curve.chosen()
        table = "\n".join(
            f"bias {p.bias:.2f}: fidelity {p.fidelity:.4f} (gain {curve.gain(p):.2f}), alignment {p.alignment:.4f}"
            for p in curve.points
        )
        summary = f"{concept.word}: chosen bias {chosen.bias:.2f} ({search.key_lock} key lock)\n{table}"
        log.info("Perfusion: %s", summary)
        return {
            "ui": {"text": [summary]},
            "result": (
                with_suggested_bias(concept, chosen.bias, search),
                chosen.bias,
                curve_image(curve, chosen),
                samples,
            ),
        }
