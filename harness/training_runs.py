"""Training runs that tests open inside the host, on models its loader gave: the made-up word
'hugsy' for a 'teddy', C⁻¹ over the node's minimum of prompts (cached after the first run)."""

from __future__ import annotations

WORD, SUPERCLASS = "hugsy", "teddy"
COVARIANCE_PROMPTS = 128


def _arguments(models, pixels, config) -> tuple:
    """The trainer's positional arguments: (MODEL, CLIP, VAE), an IMAGE batch, no masks."""
    model, clip, vae = models
    return model, clip, vae, pixels, None, WORD, SUPERCLASS, config


def open_run(pack, models, pixels, config, **options):
    """`trainer.open_run`; `options` are its keywords (gradient_checkpointing, precision, resume).
    Use it as a context manager."""
    args = _arguments(models, pixels, config)
    return pack.nodes.trainer.open_run(*args, covariance_prompts=COVARIANCE_PROMPTS, **options)


def train(pack, models, pixels, config, **options):
    """`trainer.train_concept`; `options` also take `on_step`."""
    args = _arguments(models, pixels, config)
    return pack.nodes.trainer.train_concept(*args, covariance_prompts=COVARIANCE_PROMPTS, **options)
