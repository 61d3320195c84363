"""Preview images while a concept trains: validation prompts sampled at step 0 and every N steps.

Each preview is sampled the way generation will see the concept: ComfyUI's own sampler
(`comfy.sample.sample`, the path of KSampler) on the training model clone, with the concept gated at
the inference bias and temperature (not the training ones), the concept word mapped to the current
embedding, an empty negative prompt, and one fixed seed per prompt (prompt k uses seed k at every
preview step and in every run, so images compare across steps and across runs). So the last preview
of a prompt is what Apply Perfusion Concept + KSampler (euler, normal, same cfg, steps, size and seed)
gives with the trained concept, and a preview at step k is what a run of k steps with the same seed
would give (the learning rates are constant).

Previews must not change training: they run without gradients, leave torch's global random state as
they found it, restore the training gate in `finally`, and re-assert the training models' full load.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import comfy.model_management
import comfy.utils
import numpy as np
import torch
from comfy.cli_args import args
from PIL import Image

from ..perfusion_core.concept import Concept
from ..perfusion_core.defaults import INFERENCE_BIAS, INFERENCE_TEMPERATURE
from .sampling import CFG, SAMPLER, SCHEDULER, Sampling, encode, sample_image

log = logging.getLogger("comfyui-perfusion")

DEFAULT_VALIDATION_PROMPTS = "a photo of {}\n{} on the beach"
MAX_PROMPTS = 8  # validation prompts per preview step
MAX_POINTS = 16  # preview steps per run (step 0 and the last included); a smaller interval is widened
STRIP_GAP = 4  # pixels between the prompts of one step in the image shown on the node
PLACEHOLDER_SIZE = 64  # the `previews` output when previews are off: one black image of this size


@dataclass(frozen=True)
class PreviewSettings:
    prompts: tuple[str, ...]  # with the concept word in place of '{}'
    every: int  # the interval asked for
    size: int  # pixels (square)
    steps: int  # sampler steps
    beta: float  # the inference gate the previews show
    tau: float
    cfg: float = CFG
    sampler: str = SAMPLER
    scheduler: str = SCHEDULER

    def seed(self, index: int) -> int:
        return index

    @property
    def sampling(self) -> Sampling:
        return Sampling(self.size, self.steps, self.cfg, self.sampler, self.scheduler)


def validation_prompts(text: str, word: str) -> tuple[str, ...]:
    """One prompt per non-empty line; '{}' stands for the concept word (any number of times)."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not lines:
        raise ValueError(
            "validation_prompts: give at least one prompt, one per line with '{}' where the concept word "
            "goes (e.g. 'a photo of {}'), or set preview_every to 0"
        )
    if len(lines) > MAX_PROMPTS:
        raise ValueError(f"validation_prompts: {len(lines)} prompts; at most {MAX_PROMPTS} (one per line)")
    return tuple(line.replace("{}", word) for line in lines)


def _points(steps: int, interval: int) -> int:
    return steps // interval + 1 + (1 if steps % interval else 0)


def preview_schedule(steps: int, every: int) -> tuple[list[int], int]:
    """(the steps previews are sampled at, the interval used): step 0, every multiple of the interval
    and the last step; at most MAX_POINTS steps, widening the interval to a multiple of `every` when
    `steps / every` asks for more. `every` <= 0: no previews."""
    if every <= 0 or steps < 1:
        return [], 0
    interval = every
    while _points(steps, interval) > MAX_POINTS:
        interval += every
    points = list(range(0, steps + 1, interval))
    if points[-1] != steps:
        points.append(steps)
    return points, interval


def inference_gate(resume: Concept | None) -> tuple[float, float]:
    """(β, τ) a concept is generated with: its suggested local-lock bias and temperature."""
    if resume is not None:
        return resume.info.suggested_beta_local, resume.info.suggested_tau
    return INFERENCE_BIAS, INFERENCE_TEMPERATURE


def placeholder() -> torch.Tensor:
    """What `previews` holds when previews are off: ComfyUI outputs must be tensors, and an empty batch
    breaks many image nodes, so one black image."""
    return torch.zeros(1, PLACEHOLDER_SIZE, PLACEHOLDER_SIZE, 3)


def to_8_bit(images: torch.Tensor) -> torch.Tensor:
    """IMAGE values in [0, 1] -> uint8 on the CPU."""
    return (images.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def strip(images: torch.Tensor) -> Image.Image:
    """(N, H, W, 3) uint8 images side by side, for the node's progress preview."""
    array = images.numpy()
    n, h, w, _ = array.shape
    canvas = np.full((h, n * w + (n - 1) * STRIP_GAP, 3), 24, dtype=np.uint8)
    for i in range(n):
        canvas[:, i * (w + STRIP_GAP) : i * (w + STRIP_GAP) + w] = array[i]
    return Image.fromarray(canvas)


class TrainingPreviews:
    """An `on_step(step, loss, run)` callback for `trainer.train_concept` that samples the validation
    prompts at the scheduled steps, shows them on the node and keeps them for the `previews` output."""

    def __init__(self, vae, settings: PreviewSettings, total_steps: int) -> None:
        self.vae = vae
        self.settings = settings
        self.points, self.interval = preview_schedule(total_steps, settings.every)
        self.total_steps = total_steps
        # (P, S, S, 3) uint8 per preview step, in order: a quarter of float32's memory while training
        # runs (16 steps x 8 prompts at 2048 px would hold 6 GB as float32)
        self.images: list[torch.Tensor] = []
        self.steps_done: list[int] = []
        self.seconds = 0.0
        self.samplings = 0
        self._negative = None
        self._progress = comfy.utils.ProgressBar(total_steps)
        if self.interval != settings.every:
            log.warning(
                "Perfusion: preview_every %d would give %d previews over %d steps; previewing every %d "
                "steps instead (at most %d preview steps)",
                settings.every,
                _points(total_steps, settings.every),
                total_steps,
                self.interval,
                MAX_POINTS,
            )

    def __call__(self, step: int, _loss, run) -> None:
        if step not in self.points:
            return
        start = time.perf_counter()
        images = self.sample(run)
        self.images.append(to_8_bit(images))
        self.steps_done.append(step)
        self.seconds += time.perf_counter() - start
        preview = (
            "JPEG",
            strip(self.images[-1]),
            getattr(args, "preview_size", 512),
        )  # older hosts lack the flag
        self._progress.update_absolute(step, self.total_steps, preview)

    def sample(self, run) -> torch.Tensor:
        """The validation prompts on the run's current concept at the inference gate: (P, S, S, 3)."""
        settings = self.settings
        out = []
        cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        with (
            torch.no_grad(),
            torch.random.fork_rng(devices=cuda),  # prepare_noise seeds torch's global generators
            run.state.gated_at(settings.beta, settings.tau),
        ):
            if self._negative is None:
                self._negative = encode(run.preview_clip, "")
            for index, prompt in enumerate(settings.prompts):
                positive = encode(run.preview_clip, prompt)
                out.append(
                    sample_image(
                        run.model, self.vae, positive, self._negative, settings.seed(index), settings.sampling
                    )
                )
                self.samplings += 1
            # Sampling and decoding load models through ComfyUI's manager, which may offload others when
            # memory is short: training goes on with its models fully loaded, as it started.
            comfy.model_management.load_models_gpu([run.model, run.clip.patcher], force_full_load=True)
        return torch.cat(out)

    def output(self) -> torch.Tensor:
        """One image per (preview step, prompt), step-major (8-bit values, as a saved image has)."""
        return torch.cat(self.images).float() / 255 if self.images else placeholder()

    def describe(self) -> str:
        steps = ", ".join(str(s) for s in self.steps_done)
        return f"previews at steps {steps} ({len(self.settings.prompts)} prompts each)"
