"""Seconds per denoising step with ComfyUI's own sampler, for the unpatched model and its variants.

Every variant is a ModelPatcher clone built once by the real nodes (PerfusionConceptLoader chained J
times, or LoraLoader); runs are interleaved (variant order rotates each repeat) so load from other
processes hits all variants alike, and each result is a median.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import comfy.model_management
import comfy.sample
import torch

from perfusion_core.defaults import INFERENCE_BIAS, INFERENCE_TEMPERATURE

from . import synth
from .host import PeakRss, median

FILLER = "red blue green small big old new soft warm cold dark light".split()


@dataclass(frozen=True)
class Variant:
    """What is applied to the base model: J concepts with one lock mode, or a LoRA (or nothing)."""

    concepts: int = 0
    lock: str = "local"
    lora: bool = False

    @property
    def label(self) -> str:
        if self.lora:
            return "LoRA r16"
        return (
            "unpatched"
            if self.concepts == 0
            else f"{self.concepts} concept{'s' * (self.concepts > 1)} {self.lock}"
        )


def prompt_text(words: list[str], tokens: int) -> str:
    """A prompt with the concept words (or base words) padded with one-token filler to ~`tokens` tokens."""
    head = ["a", "photo", "of", *words]
    filler = [FILLER[i % len(FILLER)] for i in range(max(0, tokens - len(head)))]
    return " ".join(head + filler)


@dataclass
class Prepared:
    """A variant's patched model and its encoded prompts, ready to sample."""

    variant: Variant
    model: object
    positive: list
    negative: list
    context_tokens: int


_NEGATIVES: dict[int, list] = {}


def _base_negative(encode, clip) -> list:
    if id(clip) not in _NEGATIVES:
        _NEGATIVES[id(clip)] = encode.encode(clip, "")[0]
    return _NEGATIVES[id(clip)]


def prepare(
    host, base_model, base_clip, variant: Variant, concept_files: list[str], lora_name: str, tokens: int
):
    """Applies `variant` with the real nodes and encodes its prompts.

    The LoRA patches only the model (LoraLoader with strength_clip 0: it has no text-encoder keys), so
    every variant except global key-lock shares the base CLIP's encoding of the empty negative prompt
    (global lock must encode it with its own CLIP: it carries the key context).
    """
    model, clip = base_model, base_clip
    if variant.lora:
        model = host.node_class("LoraLoader")().load_lora(model, clip, lora_name, 1.0, 0.0)[0]
    loader = host.node_class("PerfusionConceptLoader")()
    for name in concept_files[: variant.concepts]:
        model, clip = loader.load(model, clip, name, INFERENCE_BIAS, INFERENCE_TEMPERATURE, variant.lock)
    words = synth.concept_words(variant.concepts) if variant.concepts else ["teddy"]
    encode = host.node_class("CLIPTextEncode")()
    positive = encode.encode(clip, prompt_text(words, tokens))[0]
    if variant.concepts and variant.lock == "global":
        negative = encode.encode(clip, "")[0]
    else:
        negative = _base_negative(encode, base_clip)
    return Prepared(variant, model, positive, negative, int(positive[0][0].shape[1]))


def step_times(prepared: Prepared, size: int, steps: int, seed: int = 0) -> tuple[list[float], int]:
    """(seconds of each step, peak RSS above the start) of one euler / cfg 7 sampling run; the model is
    loaded (patched) before the clock starts."""
    latent = torch.zeros(1, 4, size // 8, size // 8)
    noise = comfy.sample.prepare_noise(latent, seed)
    comfy.model_management.load_models_gpu([prepared.model])
    stamps: list[float] = []

    def on_step(*_):
        stamps.append(time.perf_counter())

    with torch.inference_mode(), PeakRss() as memory:
        start = time.perf_counter()
        comfy.sample.sample(
            prepared.model,
            noise,
            steps,
            7.0,
            "euler",
            "normal",
            prepared.positive,
            prepared.negative,
            latent,
            callback=on_step,
            disable_pbar=True,
            seed=seed,
        )
    edges = [start, *stamps]
    return [b - a for a, b in zip(edges, edges[1:])], memory.delta


@dataclass
class Series:
    """Per-repeat medians of one variant."""

    variant: Variant
    context_tokens: int
    step_s: list[float] = field(default_factory=list)
    ratio: list[float] = field(default_factory=list)  # step time / unpatched step time of the same repeat
    peak_rss_delta: list[int] = field(default_factory=list)
    every_step_s: list[float] = field(default_factory=list)
    fastest_vs_baseline: float = float("nan")  # min over all steps / the baseline's: noise only adds time

    def summary(self) -> dict:
        return {
            "variant": self.variant.label,
            "concepts": self.variant.concepts,
            "lock": self.variant.lock if self.variant.concepts else None,
            "lora": self.variant.lora,
            "context_tokens": self.context_tokens,
            "step_s": median(self.step_s),
            "ratio": median(self.ratio),
            "overhead_pct": (median(self.ratio) - 1.0) * 100.0,
            "overhead_fastest_pct": (self.fastest_vs_baseline - 1.0) * 100.0,
            "peak_rss_delta_mb": median(self.peak_rss_delta) / 2**20,
            "repeats": len(self.step_s),
        }


def interleaved(
    prepared: list[Prepared],
    size: int,
    steps: int,
    repeats: int,
    skip_first: bool,
    warmup: bool = True,
    stop_at: float = float("inf"),
) -> list[Series]:
    """Runs every prepared variant `repeats` times in rotating order; the first entry is the baseline.

    `skip_first` drops each run's first step (it also pays for sampler setup) when there are more;
    `warmup` first runs one step untimed (first-call allocations, lazy imports). Stops repeating when
    another repeat would end after `stop_at` (time.monotonic()); there is always at least one.
    """
    series = [Series(p.variant, p.context_tokens) for p in prepared]
    if warmup:
        step_times(prepared[0], size, 1)
    last_rep_s = 0.0
    for rep in range(repeats):
        rep_start = time.monotonic()
        if rep > 0 and rep_start + last_rep_s > stop_at:
            break
        order = list(range(len(prepared)))
        order = order[rep % len(order) :] + order[: rep % len(order)]
        per_rep = {}
        for i in order:
            times, delta = step_times(prepared[i], size, steps, seed=rep)
            kept = times[1:] if skip_first and len(times) > 1 else times
            per_rep[i] = median(kept)
            series[i].step_s.append(per_rep[i])
            series[i].every_step_s.extend(kept)
            series[i].peak_rss_delta.append(delta)
        for i in order:
            series[i].ratio.append(per_rep[i] / per_rep[0])
        last_rep_s = time.monotonic() - rep_start
        print(f"  repeat {rep + 1}: {last_rep_s:.1f}s, baseline {per_rep[0]:.3f} s/step", flush=True)
    for s in series:
        s.fastest_vs_baseline = min(s.every_step_s) / min(series[0].every_step_s)
    return series
