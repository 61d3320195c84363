"""API-format prompts that use the pack's nodes, shared by tests, the demo and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from perfusion_core.defaults import INFERENCE_BIAS, INFERENCE_TEMPERATURE, TRAIN_BIAS, TRAIN_TEMPERATURE


@dataclass(frozen=True)
class ConceptUse:
    """One 'Load Perfusion Concept' node in a chain."""

    file: str
    bias: float = INFERENCE_BIAS
    temperature: float = INFERENCE_TEMPERATURE
    key_lock: str = "local"
    bias_end: float | None = None  # set: a linear bias schedule from `bias` to this

    def loader_inputs(self) -> dict:
        """The loader's widget values (the schedule's only when there is one)."""
        inputs = {"concept_name": self.file, "bias": self.bias, "temperature": self.temperature}
        inputs["key_lock"] = self.key_lock
        if self.bias_end is not None:
            inputs |= {"bias_schedule": "linear", "bias_end": self.bias_end}
        return inputs


def load_images(prompt: dict, names: Sequence[str], first_id: int = 100) -> tuple[list, list]:
    """Adds LoadImage nodes batched with ImageBatch; returns ([node, 0] of IMAGE, of MASK batch)."""
    image_ref: list | None = None
    mask_ref: list | None = None
    node = first_id
    for name in names:
        prompt[str(node)] = {"class_type": "LoadImage", "inputs": {"image": name}}
        load = str(node)
        node += 1
        if image_ref is None:
            image_ref, mask_ref = [load, 0], [load, 1]
            continue
        prompt[str(node)] = {"class_type": "ImageBatch", "inputs": {"image1": image_ref, "image2": [load, 0]}}
        image_ref = [str(node), 0]
        node += 1
        prompt[str(node)] = {"class_type": "MaskToImage", "inputs": {"mask": mask_ref}}
        prompt[str(node + 1)] = {"class_type": "MaskToImage", "inputs": {"mask": [load, 1]}}
        prompt[str(node + 2)] = {
            "class_type": "ImageBatch",
            "inputs": {"image1": [str(node), 0], "image2": [str(node + 1), 0]},
        }
        prompt[str(node + 3)] = {
            "class_type": "ImageToMask",
            "inputs": {"image": [str(node + 2), 0], "channel": "red"},
        }
        mask_ref = [str(node + 3), 0]
        node += 4
    return image_ref, mask_ref


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
) -> dict:
    """Checkpoint -> images -> Train Perfusion Concept (-> Save) (+ loss curve preview). Train node id "3"."""
    prompt: dict = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}}}
    images, masks = load_images(prompt, image_names)
    inputs = {
        "model": ["1", 0],
        "clip": ["1", 1],
        "vae": ["1", 2],
        "images": images,
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
        **(extra or {}),
    }
    if use_mask:
        inputs["mask"] = masks
    prompt["3"] = {"class_type": "PerfusionTrainConcept", "inputs": inputs}
    prompt["5"] = {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}}
    if save_name is not None:
        prompt["4"] = {
            "class_type": "PerfusionSaveConcept",
            "inputs": {"concept": ["3", 0], "name": save_name, "overwrite": overwrite},
        }
    return prompt


def generate_prompt(
    ckpt_name: str,
    concepts: Sequence[ConceptUse] = (),
    *,
    positive: str = "a photo of hugsy on the beach",
    negative: str = "",
    seed: int = 1,
    steps: int = 2,
    cfg: float = 7.0,
    size: int = 64,
    batch_size: int = 1,
    filename_prefix: str = "perfusion",
) -> dict:
    """Checkpoint -> concept loaders (chained) -> CLIPTextEncode x2 -> KSampler -> VAEDecode -> SaveImage.

    Node ids: "1" checkpoint, "20".. loaders, "4"/"5" prompts, "6" latent, "7" KSampler, "8" decode,
    "9" save. Without concepts the graph is the plain txt2img one.
    """
    prompt: dict = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}}}
    model, clip = ["1", 0], ["1", 1]
    for i, use in enumerate(concepts):
        node = str(20 + i)
        prompt[node] = {
            "class_type": "PerfusionConceptLoader",
            "inputs": {"model": model, "clip": clip, **use.loader_inputs()},
        }
        model, clip = [node, 0], [node, 1]
    prompt["4"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": clip, "text": positive}}
    prompt["5"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": clip, "text": negative}}
    prompt["6"] = {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": size, "height": size, "batch_size": batch_size},
    }
    prompt["7"] = {
        "class_type": "KSampler",
        "inputs": {
            "model": model,
            "seed": seed,
            "steps": steps,
            "cfg": cfg,
            "sampler_name": "euler",
            "scheduler": "normal",
            "positive": ["4", 0],
            "negative": ["5", 0],
            "latent_image": ["6", 0],
            "denoise": 1.0,
        },
    }
    prompt["8"] = {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}}
    prompt["9"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["8", 0], "filename_prefix": filename_prefix},
    }
    return prompt


def choose_bias_prompt(
    ckpt_name: str,
    concept_file: str,
    image_names: Sequence[str],
    clip_vision: str,
    save_name: str,
    **search,
) -> dict:
    """Checkpoint + concept file + images + CLIP vision -> Choose Perfusion Bias -> Save (node ids: "10"
    the chooser, "11" the save, "12" a preview of its curve). ``search``: the chooser's widgets."""
    prompt: dict = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt_name}}}
    images, _ = load_images(prompt, image_names)
    prompt["2"] = {"class_type": "PerfusionConceptFile", "inputs": {"concept_name": concept_file}}
    prompt["3"] = {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": clip_vision}}
    inputs = {"model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], "clip_vision": ["3", 0]}
    inputs |= {"concept": ["2", 0], "images": images, **search}
    prompt["10"] = {"class_type": "PerfusionChooseBias", "inputs": inputs}
    prompt["11"] = {
        "class_type": "PerfusionSaveConcept",
        "inputs": {"concept": ["10", 0], "name": save_name, "overwrite": True},
    }
    prompt["12"] = {"class_type": "PreviewImage", "inputs": {"images": ["10", 2]}}
    return prompt
