"""One training run in its own process (clean peak memory): ours or ComfyUI's TrainLoraNode.

    python -m benchmarks.train_worker --base DIR --layout tiny --trainer perfusion --steps 8 --resolution 64

Both run through the real executor on the same checkpoint, toy images, resolution, batch 1 and gradient
accumulation 1. Seconds per optimizer step are the gaps between the trainer node's progress events
(the first gap, which holds setup, is dropped). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections.abc import Sequence
from pathlib import Path

from harness.graph import Graph
from harness.perfusion_graphs import train_prompt
from harness.sample_images import write_toy_images

from .host import PeakRss, median, start_host

TRAINERS = {"perfusion": "PerfusionTrainConcept", "lora": "TrainLoraNode"}  # each run's trainer class
IMAGES = [f"bench_{i}.png" for i in range(3)]


def lora_prompt(
    ckpt: str,
    steps: int,
    resolution: int,
    dtype: str,
    gradient_checkpointing: bool,
    *,
    images: Sequence[str] = IMAGES,
    text: str = "a photo of a teddy",
    rank: int = 16,
    learning_rate: float = 0.0005,
    trainer: type | None = None,
) -> Graph:
    """Checkpoint -> images -> ImageScale -> VAEEncode -> RebatchLatents(1) -> TrainLoraNode(rank 16) -> SaveLoRA.

    RebatchLatents gives TrainLoraNode a list of latents: in ComfyUI 0.3.75 one batch fails
    (UnboundLocalError: multi_res). ``trainer`` is the host's TrainLoraNode class, whose inputs and
    outputs move between releases: given, SaveLoRA takes its LORA_MODEL output (0 in 0.33, 1 in
    0.3.75) and the inputs left out here get its defaults (0.33 requires five more); None builds the
    0.3.75 prompt. No ``images``: ImageScale's image is left unset, for the caller to link."""
    g = Graph()
    checkpoint = g.checkpoint(ckpt)
    scale = g.add(
        "ImageScale",
        image=g.load_images(images)[0] if images else None,
        upscale_method="bilinear",
        width=resolution,
        height=resolution,
        crop="center",
    )
    latents = g.add("VAEEncode", pixels=scale, vae=checkpoint[2])
    rebatched = g.add("RebatchLatents", latents=latents, batch_size=1)
    positive = g.encode(checkpoint[1], text)
    train = g.add(
        "TrainLoraNode",
        model=checkpoint[0],
        latents=rebatched,
        positive=positive,
        batch_size=1,
        grad_accumulation_steps=1,
        steps=steps,
        learning_rate=learning_rate,
        rank=rank,
        optimizer="AdamW",
        loss_function="MSE",
        seed=0,
        training_dtype=dtype,
        lora_dtype=dtype,
        algorithm="LoRA",
        gradient_checkpointing=gradient_checkpointing,
        existing_lora="[None]",
    )
    lora = 1
    if trainer is not None:
        lora = list(trainer.RETURN_TYPES).index("LORA_MODEL")
        inputs = g.inputs(train)
        for name, spec in trainer.INPUT_TYPES()["required"].items():
            options = spec[1] if len(spec) > 1 else {}
            if name not in inputs and "default" in options:
                inputs[name] = options["default"]
    g.add("SaveLoRA", lora=train[lora], prefix="loras/bench_lora")
    return g


def perfusion_prompt(
    ckpt: str, steps: int, resolution: int, gradient_checkpointing: bool, batch_size: int = 1
) -> Graph:
    return train_prompt(
        ckpt,
        IMAGES,
        steps=steps,
        batch_size=batch_size,
        resolution=resolution,
        covariance_prompts=128,
        save_name="bench_trained",
        extra={"gradient_checkpointing": gradient_checkpointing},
    )


def peak_rss_mb() -> float:
    """This process's peak RSS. Linux: VmHWM, which starts afresh at exec; `ru_maxrss` would also count
    the parent's RSS at fork (the bench process, with a full model loaded), which Linux carries over."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--layout", default="tiny")
    parser.add_argument("--trainer", choices=("perfusion", "lora"), required=True)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--dtype", default="bf16", help="TrainLoraNode training/lora dtype")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--batch-size", type=int, default=1, help="ours only (TrainLoraNode: 1)")
    args = parser.parse_args()
    if args.trainer == "lora" and args.batch_size != 1:
        parser.error("--batch-size: TrainLoraNode runs at batch 1 here (RebatchLatents 1)")

    host = start_host(args.base, (args.layout,))
    write_toy_images(host.layout.input, "bench", len(IMAGES))
    ckpt = host.add_checkpoint(args.layout)
    if args.trainer == "lora":
        trainer = host.node_class("TrainLoraNode")
        prompt = lora_prompt(
            ckpt, args.steps, args.resolution, args.dtype, args.gradient_checkpointing, trainer=trainer
        )
    else:
        prompt = perfusion_prompt(
            ckpt, args.steps, args.resolution, args.gradient_checkpointing, args.batch_size
        )

    train_node = prompt.node(TRAINERS[args.trainer]).id
    stamps: list[float] = []
    memory = PeakRss(interval=0.01)

    def on_message(event, data):
        if not isinstance(data, dict) or data.get("node") != train_node:
            return
        if event == "executing":
            memory.__enter__()  # peak above what was loaded when the trainer node starts
        elif event == "progress":
            stamps.append(time.perf_counter())

    result = host.run(prompt, on_message=on_message)
    memory.__exit__(None, None, None)
    result.raise_for_error()
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    print(
        json.dumps(
            {
                "trainer": args.trainer,
                "layout": args.layout,
                "resolution": args.resolution,
                "steps": args.steps,
                "dtype": "fp32" if args.trainer == "perfusion" else args.dtype,
                "gradient_checkpointing": args.gradient_checkpointing,
                "batch_size": args.batch_size,
                "step_s": median(gaps),
                "step_gaps": len(gaps),
                "peak_rss_mb": peak_rss_mb(),
                "train_peak_delta_mb": memory.delta / 2**20,
                "run_s": result.duration_s,
                # ours: the objective on a fixed batch of the training images before and after training
                "eval_before_after": result.outputs.get(train_node, {}).get("perfusion_eval"),
            }
        )
    )


if __name__ == "__main__":
    main()
