"""The device kit's run: training and sampling where users run them, in one time-boxed command.

    python -m benchmarks.gpu_check --out OUT.json          # a lent GPU (scripts/device_check.sh run)
    python -m benchmarks.gpu_check --cpu --simulate-device # the same on this CPU: tiny fixtures (CI)

ComfyUI starts as users start it, its own ``main.py`` as a real server (on NVIDIA that turns dynamic
VRAM, comfy-aimdo, on), and every measurement is a prompt over HTTP. ``benchmarks/kit_nodes.py``, a
custom node only the kit loads, reads inside the server what HTTP cannot: peak memory (the device's
used memory sampled every 5 ms, torch's allocator peaks, aimdo's VRAM; RSS on a CPU) and the time of
every progress-bar update. Seconds per step are the span from the end of the first optimizer step
to the end of the last, per step (setup, the covariance and the first step are not in it). Training
images come through the kit's Pillow reader: this 0.33 tree's LoadImage decodes through PyAV, which
the lent machine lacks.

Sections, in this order. Each records its result or its error, the JSON is rewritten after each, and
a section that no longer fits the budget is skipped and listed, so the file always says what ran:

1. ``session``: one server session, KSampler -> train -> KSampler with nothing unloaded between: no
   error, and the second image equals the first (the concept is not applied to it); a KSampler
   repeated before training is the control for kernels that are not deterministic.
2. ``training``: the SD1.5 layout (``full`` on a GPU: 859M-parameter UNet, 16 cross-attention layers)
   at 512 px, batch 4 x gradient accumulation 4: ours in fp16 and bf16, checkpointing off and on, and
   ComfyUI's TrainLoraNode (rank 16, one latent batch) on the same layout, steps and batch, in bf16 and
   in fp16 (its ``training_dtype`` none on the fp16-stored model with an fp32 LoRA: GradScaler). Every
   run starts with all models unloaded. s/step, peak memory. Rows that would eat the time the later
   sections need are skipped.
3. ``precision``: the first micro-batch's gradients (word embedding, every V target) in fp16 and bf16
   against fp32 on the same weights and batch, through the server (the kit's node): cosine per tensor.
4. ``sampling_sd15``: seconds per KSampler step (euler, cfg 7) at 512 px, unpatched vs 1 and 4
   concepts, variants interleaved, medians of repeats.
5. ``sdxl``: the SDXL layout (``sdxl_full``: the real 2.6B UNet, 70 cross-attention layers) at
   1024 px: the same sampling overhead, and training with checkpointing (batch 1 x 4): peak memory.

Random weights throughout (``harness/fixture_checkpoint.py``, built where it runs, deterministic):
the figures are speed, memory and numerics, not image quality. ``--cpu`` runs the same sections on
the tiny fixtures at 64 px with few steps, in fp32 (see CPU) and without SDXL training;
``--simulate-device`` starts the server without the packages the lent machine lacks
(``benchmarks/device_bundle.py``), with the ``av`` stand-in and a one-page frontend, as
``scripts/device_check.sh run`` starts it there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import requests

from harness.errors import HostError
from harness.fixture_checkpoint import fixture_checkpoint
from harness.graph import Graph, Node
from harness.paths import repo_root
from harness.perfusion_graphs import ConceptUse, generate_prompt, train_prompt, with_model_patch
from harness.sample_images import write_toy_images
from harness.server import ComfyServer
from perfusion_core.defaults import COVARIANCE_PROMPTS

from . import device_bundle
from .train_worker import TRAINERS, lora_prompt

IMAGE_CHAIN = ("LoadImage", "ImageBatch", "MaskToImage", "ImageToMask")  # Graph.load_images' nodes
KIT_NODES = Path(__file__).resolve().parent / "kit_nodes.py"
DEVICE_DIR = repo_root() / "scripts" / "device"
RESERVE_S = 20.0  # kept back from the budget to interrupt a prompt, stop the server and write the JSON


@dataclass(frozen=True)
class Plan:
    """Sizes of one kind of run."""

    sd15: str  # fixture layouts
    sdxl: str
    sd15_px: int
    sdxl_px: int
    steps: int  # optimizer steps per training run; the first is not timed
    batch: int
    accumulation: int
    sdxl_batch: int
    sdxl_accumulation: int
    sdxl_precision: str
    sdxl_training: bool
    precisions: tuple[str, ...]  # of the training matrix
    gradient_precisions: tuple[str, ...]  # compared with fp32
    covariance_prompts: int
    sample_steps: int
    sample_repeats: int
    budget_s: float  # the whole run, server start-up and fixture builds included


GPU = Plan(
    "full", "sdxl_full", sd15_px=512, sdxl_px=1024, steps=6, batch=4, accumulation=4,
    sdxl_batch=1, sdxl_accumulation=4, sdxl_precision="bf16", sdxl_training=True,
    precisions=("fp16", "bf16"), gradient_precisions=("fp16", "bf16"), covariance_prompts=COVARIANCE_PROMPTS,
    sample_steps=20, sample_repeats=3, budget_s=420,
)  # fmt: skip
# Half precision on a CPU was 10-30x slower than fp32 here, so the CPU run trains in fp32; its
# gradient comparison is `auto` (fp32 there) against fp32: the control, the same run twice (cosine 1).
# SDXL training is left out: its covariance and bigG's backward took 160 s on this CPU.
CPU = Plan(
    "tiny", "sdxl", sd15_px=64, sdxl_px=64, steps=2, batch=2, accumulation=2,
    sdxl_batch=1, sdxl_accumulation=1, sdxl_precision="auto", sdxl_training=False,
    precisions=("fp32",), gradient_precisions=("auto",), covariance_prompts=64,
    sample_steps=3, sample_repeats=1, budget_s=240,
)  # fmt: skip


@dataclass(frozen=True)
class Training:
    """One training run of the matrix."""

    trainer: str  # "perfusion" | "lora"
    precision: str  # "fp16" | "bf16" | "fp32"
    checkpointing: bool

    @property
    def label(self) -> str:
        return f"{self.trainer} {self.precision} checkpointing {'on' if self.checkpointing else 'off'}"


def matrix(plan: Plan) -> list[Training]:
    return [
        Training(trainer, precision, checkpointing)
        for trainer in ("perfusion", "lora")
        for precision in plan.precisions
        for checkpointing in (False, True)
    ]


# TrainLoraNode's (training_dtype, lora_dtype) per precision: its fp16 is the model's own dtype
# (fp16 as stored on a GPU) with an fp32 LoRA, which turns its GradScaler on.
LORA_DTYPES = {"bf16": ("bf16", "bf16"), "fp16": ("none", "fp32"), "fp32": ("fp32", "fp32")}


class OutOfTime(RuntimeError):
    """The budget ran out while a prompt was running (it was interrupted)."""


class Kit:
    """The running server, the budget, and the kit node's routes."""

    def __init__(self, server: ComfyServer, deadline: float) -> None:
        self.server = server
        self.deadline = deadline
        self.later_s = 0.0  # what the sections after the running one need at least

    def left(self) -> float:
        return self.deadline - time.monotonic() - RESERVE_S

    def environment(self) -> dict:
        return requests.get(f"{self.server.url}/perfusion_kit/environment", timeout=60).json()

    def run(self, prompt: dict, *, unload: bool = False) -> tuple[dict, dict]:
        """(outputs, window) of one prompt: the kit's window opens just before it is queued (after
        unloading every model when `unload`) and is read when it ends. Raises HostError when it fails,
        OutOfTime (after interrupting it) when the budget runs out first."""
        if self.left() <= 0:
            raise OutOfTime("no time left to queue a prompt")
        requests.post(f"{self.server.url}/perfusion_kit/window", json={"unload": unload}, timeout=120)
        prompt_id = self.server.queue(prompt)
        try:
            result = self.server.wait(prompt_id, timeout=max(self.left(), 1.0))
        except TimeoutError:
            self.server.interrupt()
            self.server.wait(prompt_id, timeout=RESERVE_S / 2)
            raise OutOfTime("the budget ran out during a prompt (interrupted)") from None
        window = requests.get(f"{self.server.url}/perfusion_kit/window", timeout=60).json()
        if not result.success:
            raise HostError(result.error_text)
        return {"outputs": result.outputs, "result": result}, window


def bar_updates(window: dict, node: str, total: int | None = None) -> list[tuple[float, float, float]]:
    """(seconds, value, total) of the progress bar `node` advanced most (or the one with `total`)."""
    bars: dict[int, list] = {}
    for t, _prompt, node_id, bar, value, bar_total in window["progress"]:
        if str(node_id) == node and (total is None or bar_total == total):
            bars.setdefault(bar, []).append((t, value, bar_total))
    return max(bars.values(), key=len, default=[])


def seconds_per_step(updates: list[tuple[float, float, float]], units_per_step: int) -> float | None:
    """Mean time of an optimizer step after the first (a bar of `units_per_step` units per step)."""
    after_first = [u for u in updates if u[1] >= units_per_step]
    if len(after_first) < 2 or after_first[-1][1] == after_first[0][1]:
        return None
    (t0, v0, _), (t1, v1, _) = after_first[0], after_first[-1]
    return (t1 - t0) / (v1 - v0) * units_per_step


def step_gaps(updates: list[tuple[float, float, float]]) -> list[float]:
    """Durations of the sampler's steps after the first."""
    return [b[0] - a[0] for a, b in zip(updates, updates[1:]) if b[1] > a[1]]


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(statistics.median(values)) if values else None


def memory_row(window: dict) -> dict:
    """The window's memory, with the peak above its start where the device reports it."""
    memory = dict(window["memory"])
    if "device_used_peak_mb" in memory:
        memory["device_used_added_mb"] = memory["device_used_peak_mb"] - memory["device_used_baseline_mb"]
    return memory


def kit_images(prompt: Graph, names: list[str]) -> Node:
    """The kit's image reader of `names`: outputs IMAGE (the batch) and MASK."""
    return prompt.add("PerfusionKitImages", names="\n".join(names))


def read_images_in_server(prompt: Graph, names: list[str]) -> Graph:
    """The prompt with its LoadImage chain (Graph.load_images) replaced by the kit's image reader:
    this 0.33 tree's LoadImage decodes through PyAV, which the lent machine lacks."""
    chain = {node.id for class_type in IMAGE_CHAIN for node in prompt.nodes(class_type)}
    reader = kit_images(prompt, names)
    for node_id, node in prompt.items():
        for key, value in node["inputs"].items():
            if node_id not in chain and isinstance(value, list) and len(value) == 2 and value[0] in chain:
                source = prompt[value[0]]["class_type"]
                mask = source == "ImageToMask" or (source == "LoadImage" and value[1] == 1)
                node["inputs"][key] = reader[1 if mask else 0]
    for node_id in chain:
        del prompt[node_id]
    return prompt


def complete_inputs(prompt: Graph, node: Node, info: dict) -> None:
    """Gives `node` every required widget the prompt leaves out, at the host's default (TrainLoraNode
    gains inputs from release to release)."""
    inputs = prompt.inputs(node)
    for name, spec in info["input"].get("required", {}).items():
        if name in inputs:
            continue
        options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        if "default" in options:
            inputs[name] = options["default"]
        elif isinstance(spec[0], list) and spec[0]:
            inputs[name] = spec[0][0]
        elif options.get("options"):
            inputs[name] = options["options"][0]


def training_prompt(kit: Kit, job: Training, ckpt: str, images: list[str], plan: Plan, size: int) -> Graph:
    """The API prompt of one training run of the matrix; its trainer is the node of class
    ``TRAINERS[job.trainer]``."""
    if job.trainer == "perfusion":
        prompt = train_prompt(
            ckpt, images, steps=plan.steps, batch_size=plan.batch, grad_accumulation=plan.accumulation,
            resolution=size, covariance_prompts=plan.covariance_prompts,
            extra={"gradient_checkpointing": job.checkpointing, "precision": job.precision},
        )  # fmt: skip
        return read_images_in_server(prompt, images)
    dtype, lora_dtype = LORA_DTYPES[job.precision]
    prompt = lora_prompt(ckpt, plan.steps, size, dtype, job.checkpointing, images=images)
    # One latent batch: 0.33 trains a list of latents image by image (its multi-resolution path).
    del prompt[prompt.node("RebatchLatents").id]
    info = kit.server.object_info("TrainLoraNode")
    trainer = prompt.node("TrainLoraNode")
    prompt.inputs(trainer).update(
        latents=prompt.node("VAEEncode")[0],
        batch_size=plan.batch,
        grad_accumulation_steps=plan.accumulation,
        lora_dtype=lora_dtype,
    )
    complete_inputs(prompt, trainer, info)
    prompt.inputs("SaveLoRA")["lora"] = trainer[info["output"].index("LORA_MODEL")]  # moves between releases
    return read_images_in_server(prompt, images)


def train_row(
    kit: Kit, job: Training, ckpt: str, images: list[str], plan: Plan, size: int, unload: bool = True
) -> dict:
    """s/step and peak memory of one training run (every model unloaded before it, unless not `unload`)."""
    row = asdict(job)
    started = time.monotonic()
    prompt = training_prompt(kit, job, ckpt, images, plan, size)
    _, window = kit.run(prompt, unload=unload)
    units = plan.accumulation if job.trainer == "lora" else 1
    updates = bar_updates(window, prompt.node(TRAINERS[job.trainer]).id, total=plan.steps * units)
    row.update(
        step_s=seconds_per_step(updates, units),
        run_s=time.monotonic() - started,
        memory=memory_row(window),
    )
    return row


def sample_image(kit: Kit, ckpt: str, size: int, steps: int) -> np.ndarray:
    """One KSampler image; the kit's rerun node makes a repeat sample again instead of hitting the cache."""
    prompt = generate_prompt(
        ckpt, positive="a photo of a teddy", size=size, steps=steps, filename_prefix="harness"
    )
    prompt = with_model_patch(prompt, "PerfusionKitRerun", {})
    run, _ = kit.run(prompt)
    (image,) = kit.server.images(run["result"], node_id=prompt.node("SaveImage").id)
    return image


def session_section(kit: Kit, plan: Plan, ckpt: str, images: list[str], report: dict) -> dict:
    """KSampler -> train -> KSampler in this one server session, nothing unloaded in between (the
    training clone must not get the sampler's inference-mode weights), the matrix's first settings.
    A second KSampler before training is the control: it tells a leak from a nondeterministic kernel."""
    first = sample_image(kit, ckpt, plan.sd15_px, plan.sample_steps)
    control = sample_image(kit, ckpt, plan.sd15_px, plan.sample_steps)
    section: dict = {"control_equals_first": bool(np.array_equal(first, control))}
    try:
        section["train"] = train_row(kit, matrix(plan)[0], ckpt, images, plan, plan.sd15_px, unload=False)
    except HostError as error:
        section["train"] = {"error": str(error)[-2000:]}
    second = sample_image(kit, ckpt, plan.sd15_px, plan.sample_steps)
    section.update(
        second_equals_first=bool(np.array_equal(first, second)),
        max_abs_diff=float(np.abs(first - second).max()),
    )
    return section


def training_section(kit: Kit, plan: Plan, ckpt: str, images: list[str], report: dict) -> dict:
    """The training matrix; each row is recorded as it ends (a later row may run out of time)."""
    rows = []
    report["sections"]["training"] = {"rows": rows}
    last_s = 0.0
    for job in matrix(plan):
        if kit.left() - kit.later_s < last_s:
            rows.append(
                {**asdict(job), "skipped": f"{kit.left():.0f} s left, {kit.later_s:.0f} s kept for later"}
            )
            continue
        try:
            rows.append(train_row(kit, job, ckpt, images, plan, plan.sd15_px))
        except HostError as error:
            rows.append({**asdict(job), "error": str(error)[-2000:]})
        last_s = rows[-1].get("run_s", last_s)
        print(f"  training {job.label}: {_brief(rows[-1])}", flush=True)
    return {"rows": rows}


def precision_section(kit: Kit, plan: Plan, ckpt: str, images: list[str], report: dict) -> list[dict]:
    prompt = Graph()
    checkpoint = prompt.checkpoint(ckpt)
    reader = kit_images(prompt, images)
    gradients = prompt.add(
        "PerfusionKitGradients",
        model=checkpoint[0], clip=checkpoint[1], vae=checkpoint[2], images=reader[0], resolution=plan.sd15_px,
        batch_size=plan.batch, covariance_prompts=plan.covariance_prompts,
    )  # fmt: skip
    results = []
    for precision in plan.gradient_precisions:
        prompt.inputs(gradients)["precision"] = precision
        run, window = kit.run(prompt, unload=True)
        (row,) = run["outputs"][gradients.id]["gradients"]
        row["memory"] = memory_row(window)
        results.append(row)
    return results


def sampling(kit: Kit, plan: Plan, ckpt: str, size: int, subfolder: str) -> dict:
    """s/step of KSampler unpatched and with 1 and 4 concepts, interleaved, medians of repeats."""
    writer = Graph()
    checkpoint = writer.checkpoint(ckpt)
    concepts = writer.add(
        "PerfusionKitConcepts", model=checkpoint[0], clip=checkpoint[1], count=4, subfolder=subfolder
    )
    written, _ = kit.run(writer)
    names, words = written["outputs"][concepts.id]["concepts"], written["outputs"][concepts.id]["words"]
    counts = (0, 1, 4)

    def prompt(count: int, seed: int, steps: int) -> Graph:
        text = "a photo of " + (" and ".join(words[:count]) if count else "a teddy") + " on a red bench"
        uses = [ConceptUse(name) for name in names[:count]]
        return generate_prompt(ckpt, uses, positive=text, seed=seed, steps=steps, size=size)

    kit.run(prompt(0, 0, 2))  # warm-up: loading, first-call allocations, kernel selection
    step_s: dict[int, list[float]] = {c: [] for c in counts}
    ratios: dict[int, list[float]] = {c: [] for c in counts}
    memory: dict[int, dict] = {}
    for rep in range(plan.sample_repeats):
        order = counts[rep % len(counts) :] + counts[: rep % len(counts)]
        this_rep = {}
        for count in order:
            sampled = prompt(count, rep + 1, plan.sample_steps)
            _, window = kit.run(sampled)
            this_rep[count] = median(step_gaps(bar_updates(window, sampled.node("KSampler").id)))
            step_s[count].append(this_rep[count])
            memory[count] = memory_row(window)
        for count in counts:
            if this_rep[count] is not None and this_rep[0]:
                ratios[count].append(this_rep[count] / this_rep[0])
    rows = []
    for count in counts:
        ratio = median(ratios[count])
        rows.append(
            {
                "concepts": count,
                "step_s": median(step_s[count]),
                "overhead_pct": (ratio - 1) * 100 if ratio is not None else None,
                "repeats": len(step_s[count]),
                "memory": memory.get(count),
            }
        )
    return {"resolution": size, "steps": plan.sample_steps, "rows": rows}


def sampling_sd15_section(kit: Kit, plan: Plan, ckpt: str, images: list[str], report: dict) -> dict:
    return sampling(kit, plan, ckpt, plan.sd15_px, "kit_sd15")


def sdxl_section(kit: Kit, plan: Plan, ckpt: str, images: list[str], report: dict) -> dict:
    section = report["sections"]["sdxl"] = {}
    section["sampling"] = sampling(kit, plan, ckpt, plan.sdxl_px, "kit_sdxl")
    if not plan.sdxl_training:
        section["training"] = {"skipped": "not in this plan (a CPU run: minutes of bigG)"}
        return section
    prompt = train_prompt(
        ckpt, images, steps=plan.steps, batch_size=plan.sdxl_batch,
        grad_accumulation=plan.sdxl_accumulation, resolution=plan.sdxl_px,
        covariance_prompts=plan.covariance_prompts,
        extra={"gradient_checkpointing": True, "precision": plan.sdxl_precision},
    )  # fmt: skip
    started = time.monotonic()
    _, window = kit.run(read_images_in_server(prompt, images), unload=True)
    section["training"] = {
        "precision": plan.sdxl_precision,
        "checkpointing": True,
        "batch": [plan.sdxl_batch, plan.sdxl_accumulation],
        "resolution": plan.sdxl_px,
        "step_s": seconds_per_step(
            bar_updates(window, prompt.node("PerfusionTrainConcept").id, total=plan.steps), 1
        ),
        "run_s": time.monotonic() - started,
        "memory": memory_row(window),
    }
    return section


# (name, function, seconds it needs on a GPU at least, which checkpoint it uses)
SECTIONS: tuple[tuple[str, Callable, float, str], ...] = (
    ("session", session_section, 60, "sd15"),
    ("training", training_section, 90, "sd15"),
    ("precision", precision_section, 30, "sd15"),
    ("sampling_sd15", sampling_sd15_section, 40, "sd15"),
    ("sdxl", sdxl_section, 90, "sdxl"),
)


def _brief(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) < 300 else text[:297] + "..."


def write_report(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    os.replace(tmp, out)


def simulated_env() -> dict[str, str]:
    """The server's environment without the packages the lent machine lacks (see device_bundle)."""
    path = [str(DEVICE_DIR / "simulate"), str(DEVICE_DIR / "stubs"), os.environ.get("PYTHONPATH", "")]
    return {
        "PYTHONPATH": os.pathsep.join(filter(None, path)),
        "PERFUSION_KIT_BLOCK": ",".join(device_bundle.LEFT_OUT),
    }


def needs_front_end_root(simulate: bool) -> bool:
    import importlib.util

    return simulate or importlib.util.find_spec("comfyui_frontend_package") is None


def failed_imports(log: str) -> list[str]:
    """The host's node modules that did not import (start-up goes on without them)."""
    return [line.split("Cannot import ", 1)[1][:200] for line in log.splitlines() if "Cannot import " in line]


def prepare_server(args: argparse.Namespace, plan: Plan, budget: float, report: dict) -> ComfyServer:
    """The fixtures (built here, timed) in a new base directory, with the kit's node, not started."""
    builds, checkpoints = {}, []
    for layout in (plan.sd15, plan.sdxl):
        t0 = time.monotonic()
        checkpoints.append(fixture_checkpoint(layout))
        builds[layout] = time.monotonic() - t0
    report["environment"]["fixture_build_s"] = builds
    base = Path(args.base or tempfile.mkdtemp(prefix="perfusion-kit-"))
    extra_args = ["--preview-method", "none"]
    if needs_front_end_root(args.simulate_device):
        front_end = base / "front_end"
        front_end.mkdir(parents=True, exist_ok=True)
        (front_end / "index.html").write_text("<!doctype html><title>Perfusion device kit</title>\n")
        extra_args += ["--front-end-root", str(front_end)]
    return ComfyServer(
        base, checkpoints=checkpoints, custom_nodes={"perfusion_kit_nodes.py": KIT_NODES},
        extra_args=extra_args, env=simulated_env() if args.simulate_device else None,
        startup_timeout=max(60.0, min(240.0, budget / 2)),
    )  # fmt: skip


def measure(kit: Kit, plan: Plan, args: argparse.Namespace, report: dict) -> None:
    """Every section that fits the budget, in order, the report rewritten after each."""
    server = kit.server
    report["environment"]["startup_s"] = server.startup_s
    report["environment"]["failed_node_imports"] = failed_imports(server.log_text())
    report["environment"].update(kit.environment())
    images = write_toy_images(server.layout.input, "kit", 4)
    names = dict(zip(("sd15", "sdxl"), server.layout.checkpoint_names, strict=True))
    print(
        f"device kit: {report['environment'].get('device_name')}, {report['kit']['budget_s']:.0f} s",
        flush=True,
    )
    write_report(report, args.out)
    floors = [needs_s if not args.cpu else 1.0 for _, _, needs_s, _ in SECTIONS]
    for index, (name, section, _, model) in enumerate(SECTIONS):
        floor, kit.later_s = floors[index], sum(floors[index + 1 :])
        if kit.left() < floor:
            report["skipped"][name] = f"{kit.left():.0f} s left, needs about {floor:.0f} s"
            continue
        t0 = time.monotonic()
        try:
            report["sections"][name] = section(kit, plan, names[model], images, report)
        except OutOfTime as error:
            report["skipped"][name] = f"stopped: {error}"
        except Exception as error:  # recorded; the next section still runs
            report["errors"][name] = "".join(traceback.format_exception(error))[-4000:]
            if not server.running:
                report["errors"][name] += "\n" + server.log_text(60)
                return
        report["kit"].setdefault("section_s", {})[name] = time.monotonic() - t0
        print(f"{name}: {_brief(report['sections'].get(name, report['errors'].get(name)))}", flush=True)
        write_report(report, args.out)


def run(args: argparse.Namespace) -> dict:
    plan = CPU if args.cpu else GPU
    budget = args.budget_s or plan.budget_s
    started = time.monotonic()
    deadline = started + budget
    report: dict = {
        "kit": {"mode": "cpu" if args.cpu else "gpu", "plan": asdict(plan), "budget_s": budget,
                "simulate_device": args.simulate_device, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        "environment": {},
        "sections": {},
        "skipped": {},
        "errors": {},
    }  # fmt: skip
    server = None
    try:
        server = prepare_server(args, plan, budget, report)
        server.start()
        measure(Kit(server, deadline), plan, args, report)
    except Exception as error:  # fixtures, start-up or the kit's node: the report says which
        report["errors"]["setup"] = "".join(traceback.format_exception(error))[-6000:]
    finally:
        report["kit"]["wall_s"] = time.monotonic() - started
        write_report(report, args.out)
        if server is not None:
            server.stop()
            if args.server_log is not None and server.log_path.is_file():
                shutil.copyfile(server.log_path, args.server_log)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cpu", action="store_true", help="tiny fixtures, 64 px, few steps, on this CPU")
    parser.add_argument(
        "--simulate-device",
        action="store_true",
        help="start the server without the packages the lent GPU machine lacks (the CPU rehearsal)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="the JSON report (default: benchmarks/results/gpu_check.json; --cpu: a temp file)",
    )
    parser.add_argument("--budget-s", type=float, help="seconds for the whole run (default 420 GPU, 240 CPU)")
    parser.add_argument("--base", type=Path, help="the server's base directory (default: a new temp folder)")
    parser.add_argument("--server-log", type=Path, help="copy the server's log here at the end")
    args = parser.parse_args(argv)
    if args.cpu:
        os.environ["PERFUSION_DEVICE"] = "cpu"  # harness.paths.use_cpu: main.py --cpu
    if args.out is None:
        folder = Path(tempfile.gettempdir()) if args.cpu else Path(__file__).parent / "results"
        args.out = folder / "gpu_check.json"
    report = run(args)
    print(f"written {args.out} ({report['kit']['wall_s']:.0f} s)")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
