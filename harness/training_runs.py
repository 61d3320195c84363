"""Training runs that tests open inside the host, on models its loader gave: the made-up word
'hugsy' for a 'teddy', C⁻¹ over the node's minimum of prompts (cached after the first run)."""

from __future__ import annotations

from perfusion_core.training_job import TrainingJob

WORD, SUPERCLASS = "hugsy", "teddy"
COVARIANCE_PROMPTS = 128


def job(pixels, config, **options) -> TrainingJob:
    """The job on an IMAGE batch, no masks; `options` are TrainingJob's other fields
    (gradient_checkpointing, precision, resume)."""
    return TrainingJob(WORD, SUPERCLASS, pixels, config, covariance_prompts=COVARIANCE_PROMPTS, **options)


def open_run(pack, models, pixels, config, **options):
    """`trainer.open_run` on (MODEL, CLIP, VAE); `options` as for `job`. Use it as a context manager."""
    return pack.nodes.trainer.open_run(*models, job(pixels, config, **options))


def train(pack, models, pixels, config, on_step=None, **options):
    """`trainer.train_concept` on (MODEL, CLIP, VAE); `options` as for `job`."""
    return pack.nodes.trainer.train_concept(*models, job(pixels, config, **options), on_step=on_step)
