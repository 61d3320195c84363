"""The graphs tests, the demo and the benchmarks run, built on :class:`harness.graph.Graph`: plain
and concept generation, training, and the bias chooser. Callers find a node by its class
(``graph.node("KSampler")``), never by id."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.fixture_checkpoint import fixture_checkpoint_name
from harness.graph import Graph, Node
from perfusion_core.defaults import INFERENCE_BIAS, INFERENCE_TEMPERATURE, TRAIN_BIAS, TRAIN_TEMPERATURE

__all__ = [
    "ConceptUse",
    "add_concept",
    "add_concepts",
    "add_unpatched_branch",
    "choose_bias_prompt",
    "generate_prompt",
    "resume_from",
    "train_prompt",
    "with_model_patch",
]


@dataclass(frozen=True)
class ConceptUse:
    """One 'Load Perfusion Concept' node in a chain."""

    file: str
    bias: float = INFERENCE_BIAS
    temperature: float = INFERENCE_TEMPERATURE
    key_lock: str = "local"
    bias_end: float | None = None  # set: a linear bias schedule from `bias` to this
    bias_mode: str = "widget"

    def loader_inputs(self) -> dict:
        """Every widget of the loader, as the frontend saves them."""
        linear = self.bias_end is not None
        return {
            "concept_name": self.file,
            "bias": self.bias,
            "temperature": self.temperature,
            "key_lock": self.key_lock,
            "bias_mode": self.bias_mode,
            "bias_schedule": "linear" if linear else "constant",
            "bias_end": self.bias_end if linear else self.bias,
        }


def add_concept(g: Graph, model: list, clip: list, use: ConceptUse) -> Node:
    """One concept loader on (model, clip); outputs MODEL, CLIP."""
    return g.add("PerfusionConceptLoader", model=model, clip=clip, **use.loader_inputs())


def add_concepts(g: Graph, model: list, clip: list, uses: Sequence[ConceptUse]) -> tuple[list, list]:
    """Chains one loader per concept onto (model, clip); returns the last loader's (MODEL, CLIP)."""
    for use in uses:
        loader = add_concept(g, model, clip, use)
        model, clip = loader[0], loader[1]
    return model, clip


def with_model_patch(
    prompt: Graph, class_type: str, inputs: dict, *, after_concepts: bool = True, patches_clip: bool = False
) -> Graph:
    """A copy of a :func:`generate_prompt` graph with a node that patches MODEL (and, with
    ``patches_clip``, CLIP), such as a LoRA loader, before the first concept loader or after the last
    one (after the checkpoint when there are none)."""
    g = copy.deepcopy(prompt)
    loaders = g.nodes("PerfusionConceptLoader")
    after_concepts = after_concepts or not loaders
    source = loaders[-1] if after_concepts and loaders else g.node("CheckpointLoaderSimple")
    wired = {"model": source[0], **({"clip": source[1]} if patches_clip else {})}
    patch = g.add(class_type, **inputs, **wired)
    rewired = {"model": patch[0], **({"clip": patch[1]} if patches_clip else {})}
    if not after_concepts:
        g.inputs(loaders[0]).update(rewired)
        return g
    g.inputs("KSampler")["model"] = rewired["model"]
    if patches_clip:
        for encode in g.nodes("CLIPTextEncode"):
            g.inputs(encode)["clip"] = rewired["clip"]
    return g


def add_unpatched_branch(g: Graph, text: str, filename_prefix: str) -> Node:
    """The checkpoint's own MODEL and CLIP sampled in the same graph with the widgets and latent of its
    first KSampler -> VAEDecode -> SaveImage; returns the save node."""
    ckpt = g.node("CheckpointLoaderSimple")
    sampler = g.inputs(g.nodes("KSampler")[0])
    widgets = {k: sampler[k] for k in ("seed", "steps", "cfg", "sampler_name", "scheduler", "denoise")}
    pos, neg = g.encode(ckpt[1], text), g.encode(ckpt[1], "")
    return g.save(g.sample(ckpt[0], pos, neg, sampler["latent_image"], ckpt[2], **widgets), filename_prefix)


def resume_from(g: Graph, concept_file: str) -> Node:
    """Has the graph's trainer resume ``concept_file`` (through a Perfusion Concept File node); returns
    the trainer."""
    trainer = g.node("PerfusionTrainConcept")
    g.inputs(trainer)["resume"] = g.add("PerfusionConceptFile", concept_name=concept_file)[0]
    return trainer


def train_prompt(
    ckpt_name: str,
    image_names: Sequence[str],
    *,
    word: str = "hugsy",
    superclass: str = "teddy",
    steps: int = 8,
    batch_size: int = 1,
    grad_accumulation: int = 1,
    lr_v: float = 0.03,
    lr_embedding: float = 0.006,
    resolution: int = 64,
    seed: int = 0,
    templates: str = "a photo of a {}\na good photo of the {}\na close-up photo of a {}",
    use_mask: bool = False,
    save_name: str | None = None,
    overwrite: bool = True,
    covariance_prompts: int = 128,
    extra: dict | None = None,
) -> Graph:
    """Checkpoint -> images -> Train Perfusion Concept (-> Save) (+ a preview of its loss curve).
    Without ``image_names`` the trainer's images are left for the caller to link (a dataset node);
    ``extra``: more of its inputs, or other values for those above."""
    g = Graph()
    ckpt = g.checkpoint(ckpt_name)
    images, masks = g.load_images(image_names) if image_names else (None, None)
    widgets = {
        "concept_word": word,
        "superclass": superclass,
        "steps": steps,
        "batch_size": batch_size,
        "grad_accumulation": grad_accumulation,
        "lr_v": lr_v,
        "lr_embedding": lr_embedding,
        "train_bias": TRAIN_BIAS,
        "train_temperature": TRAIN_TEMPERATURE,
        "resolution": resolution,
        "flip": True,
        "seed": seed,
        "templates": templates,
        "covariance_prompts": covariance_prompts,
        **({"mask": masks} if use_mask else {}),
        **(extra or {}),
    }
    trainer = g.add(
        "PerfusionTrainConcept", model=ckpt[0], clip=ckpt[1], vae=ckpt[2], images=images, **widgets
    )
    g.preview(trainer[1])
    if save_name is not None:
        g.add("PerfusionSaveConcept", concept=trainer, name=save_name, overwrite=overwrite)
    return g


def generate_prompt(
    ckpt_name: str | None = None,
    concepts: Sequence[ConceptUse] = (),
    *,
    positive: str = "a photo of hugsy on the beach",
    negative: str = "",
    size: int = 64,
    batch_size: int = 1,
    filename_prefix: str = "perfusion",
    **sampler: Any,
) -> Graph:
    """Checkpoint (default: the tiny fixture) -> concept loaders (chained) -> CLIPTextEncode x2 ->
    KSampler (``sampler``: its widgets, Graph.ksampler's defaults) -> VAEDecode -> SaveImage. Without
    concepts it is the plain txt2img graph."""
    g = Graph()
    ckpt = g.checkpoint(ckpt_name or fixture_checkpoint_name())
    model, clip = add_concepts(g, ckpt[0], ckpt[1], concepts)
    pos, neg = g.encode(clip, positive), g.encode(clip, negative)
    image = g.sample(model, pos, neg, g.latent(size, batch_size=batch_size), ckpt[2], **sampler)
    g.save(image, filename_prefix)
    return g


def choose_bias_prompt(
    ckpt_name: str,
    concept_file: str,
    image_names: Sequence[str],
    clip_vision: str,
    save_name: str,
    **search,
) -> Graph:
    """Checkpoint + concept file + images + CLIP vision -> Choose Perfusion Bias -> Save, and a preview
    of its curve. ``search``: the chooser's widgets."""
    g = Graph()
    ckpt = g.checkpoint(ckpt_name)
    images, _ = g.load_images(image_names)
    concept = g.add("PerfusionConceptFile", concept_name=concept_file)
    vision = g.add("CLIPVisionLoader", clip_name=clip_vision)
    chooser: Node = g.add(
        "PerfusionChooseBias",
        model=ckpt[0],
        clip=ckpt[1],
        vae=ckpt[2],
        clip_vision=vision,
        concept=concept,
        images=images,
        **search,
    )
    g.add("PerfusionSaveConcept", concept=chooser, name=save_name, overwrite=True)
    g.preview(chooser[2])
    return g
