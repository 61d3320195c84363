"""API-format prompts built from core ComfyUI nodes, for tests, the demo and benchmarks."""

from __future__ import annotations

from harness.fixture_checkpoint import fixture_checkpoint_name

__all__ = ["txt2img_prompt"]


def txt2img_prompt(
    ckpt_name: str | None = None,
    *,
    positive: str = "a photo of a dog on the beach",
    negative: str = "",
    seed: int = 1,
    steps: int = 2,
    cfg: float = 7.0,
    sampler_name: str = "euler",
    scheduler: str = "normal",
    width: int = 64,
    height: int = 64,
    batch_size: int = 1,
    filename_prefix: str = "harness",
) -> dict:
    """CheckpointLoaderSimple -> CLIPTextEncode x2 -> EmptyLatentImage -> KSampler -> VAEDecode -> SaveImage.

    Node ids: "1" loader, "2" positive, "3" negative, "4" latent, "5" KSampler, "6" VAEDecode,
    "7" SaveImage. ``ckpt_name`` defaults to the tiny fixture's file name.
    """
    return {
        "1": {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": ckpt_name or fixture_checkpoint_name()},
        },
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": positive}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": negative}},
        "4": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": width, "height": height, "batch_size": batch_size},
        },
        "5": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0],
                "seed": seed,
                "steps": steps,
                "cfg": cfg,
                "sampler_name": sampler_name,
                "scheduler": scheduler,
                "positive": ["2", 0],
                "negative": ["3", 0],
                "latent_image": ["4", 0],
                "denoise": 1.0,
            },
        },
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": filename_prefix}},
    }
