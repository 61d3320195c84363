"""The device kit's instruments inside the ComfyUI server: a custom-node file only the kit loads.

``benchmarks.gpu_check`` links this file into its own base directory's ``custom_nodes``; the pack
neither ships nor imports it. It gives the kit, a client of the real server, what HTTP cannot see:

* ``GET /perfusion_kit/environment``: device, torch, host, whether dynamic VRAM (comfy-aimdo) is on.
* ``POST /perfusion_kit/window`` opens a measuring window (``{"unload": true}`` first unloads every
  model, as a fresh start for a comparison); ``GET /perfusion_kit/window`` reads it: peak memory
  since it opened and every progress-bar update in it (time, node, bar, value, total), recorded
  before ComfyUI's 100 ms throttle drops updates, so steps shorter than that are still timed.
  Memory: torch's allocator peaks, the device's used memory (``cudaMemGetInfo``) sampled every 5 ms
  (it also counts what comfy-aimdo maps outside torch's allocator), aimdo's own VRAM, and the server's
  RSS (the only figure a CPU run has).
* Nodes: ``PerfusionKitImages`` (input images read with Pillow: this 0.33's LoadImage decodes through
  PyAV, which the lent machine lacks), ``PerfusionKitRerun`` (passes a MODEL on and always runs, so a
  repeated KSampler really samples again), ``PerfusionKitConcepts`` (random concept files for the
  connected model, any family) and ``PerfusionKitGradients`` (first-step gradients in a dtype against
  fp32, same weights and batch).
"""

from __future__ import annotations

import gc
import importlib
import math
import sys
import threading
import time
from pathlib import Path

import comfy.model_management
import comfy.utils
import folder_paths
import numpy as np
import psutil
import torch
from aiohttp import web
from PIL import Image
from server import PromptServer

REPO = Path(__file__).resolve().parents[1]
CATEGORY = "perfusion/device kit"


def pack_module(sub: str):
    """A module of the pack as ComfyUI imported it (its name is the custom-node folder's); "" for the
    package itself."""
    init = REPO / "__init__.py"
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and Path(path).resolve() == init:
            return importlib.import_module(f"{name}.{sub}" if sub else name)
    raise RuntimeError(f"the Perfusion pack ({REPO}) is not loaded in this ComfyUI")


def _executing() -> tuple[str | None, str | None]:
    """(prompt id, node id) of the node running now."""
    try:
        from comfy_execution.utils import get_executing_context
    except ImportError:  # hosts before 2025: the server's last ids
        server = PromptServer.instance
        return server.last_prompt_id, server.last_node_id
    context = get_executing_context()
    return (context.prompt_id, context.node_id) if context is not None else (None, None)


class Window:
    """Peak memory and progress updates between an open() and a read(). A CUDA query that fails (an
    allocator without statistics) is reported in the window, never raised into the prompt."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.progress: list[list] = []
        self.device = None
        self.open_at = 0.0
        self.baseline_used = self.peak_used = 0
        self.peak_rss = 0
        self.errors: dict[str, str] = {}
        self._sampler: threading.Thread | None = None

    def _used(self) -> int:
        free, total = torch.cuda.mem_get_info(self.device)
        return total - free

    def _try(self, what: str, query, default=None):
        try:
            return query()
        except Exception as error:  # reported in the window
            self.errors[what] = repr(error)
            return default

    def _sample(self) -> None:
        process = psutil.Process()
        while True:
            rss = process.memory_info().rss
            used = self._try("device_used", self._used, 0) if self.device is not None else 0
            with self.lock:
                self.peak_rss = max(self.peak_rss, rss)
                self.peak_used = max(self.peak_used, used)
            time.sleep(0.005)

    def open(self, unload: bool) -> dict:
        if unload:
            comfy.model_management.unload_all_models()
            gc.collect()
            comfy.model_management.soft_empty_cache()
        device = comfy.model_management.get_torch_device()
        self.device = device if device.type == "cuda" else None
        self.errors = {}
        if self.device is not None:
            self._try("synchronize", lambda: torch.cuda.synchronize(self.device))
            self._try("reset_peak", lambda: torch.cuda.reset_peak_memory_stats(self.device))
        used = self._try("device_used", self._used, 0) if self.device is not None else 0
        with self.lock:
            self.progress = []
            self.open_at = time.perf_counter()
            self.baseline_used = self.peak_used = used
            self.peak_rss = psutil.Process().memory_info().rss
        if self._sampler is None:
            self._sampler = threading.Thread(target=self._sample, name="perfusion-kit-memory", daemon=True)
            self._sampler.start()
        return self.read()

    def record(self, bar, value: float, total: float) -> None:
        prompt_id, node_id = _executing()
        with self.lock:
            self.progress.append([time.perf_counter(), prompt_id, node_id, id(bar), value, total])

    def read(self) -> dict:
        mib = 2**20
        memory: dict = {"rss_peak_mb": self.peak_rss / mib}
        if self.device is not None:
            used = self._try("device_used", self._used, 0)
            memory.update(
                device_used_baseline_mb=self.baseline_used / mib,
                device_used_peak_mb=max(self.peak_used, used) / mib,
                torch_max_allocated_mb=self._try(
                    "max_allocated", lambda: torch.cuda.max_memory_allocated(self.device) / mib
                ),
                torch_max_reserved_mb=self._try(
                    "max_reserved", lambda: torch.cuda.max_memory_reserved(self.device) / mib
                ),
            )
            aimdo = sys.modules.get("comfy_aimdo.control")
            if aimdo is not None and _aimdo_enabled():
                memory["aimdo_vram_mb"] = self._try("aimdo", lambda: aimdo.get_total_vram_usage() / mib)
        if self.errors:
            memory["errors"] = dict(self.errors)
        with self.lock:
            progress = [[t - self.open_at, *rest] for t, *rest in self.progress]
        return {"memory": memory, "progress": progress}


WINDOW = Window()
_update_absolute = comfy.utils.ProgressBar.update_absolute


def _recording_update_absolute(self, value, total=None, preview=None):
    WINDOW.record(self, value, total if total is not None else self.total)
    return _update_absolute(self, value, total, preview)


comfy.utils.ProgressBar.update_absolute = _recording_update_absolute


def _aimdo_enabled() -> bool:
    memory_management = sys.modules.get("comfy.memory_management")
    return bool(getattr(memory_management, "aimdo_enabled", False))


def environment() -> dict:
    """What this server runs on, and how (the JSON's 'environment')."""
    import comfy.model_patcher

    device = comfy.model_management.get_torch_device()
    env = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "vram_state": comfy.model_management.vram_state.name,
        "dynamic_vram": _aimdo_enabled(),
        "model_patcher": comfy.model_patcher.CoreModelPatcher.__name__,
    }
    try:
        import comfyui_version

        env["comfyui"] = comfyui_version.__version__
    except ImportError:
        env["comfyui"] = None
    if device.type == "cuda":
        env["device_memory_mb"] = torch.cuda.get_device_properties(device).total_memory / 2**20
    for name in ("av", "comfy_kitchen", "comfy_aimdo"):
        module = sys.modules.get(name)
        env[f"{name}_file"] = getattr(module, "__file__", None) if module else None
    return env


routes = PromptServer.instance.routes


@routes.get("/perfusion_kit/environment")
async def _environment(request):
    return web.json_response(environment())


@routes.post("/perfusion_kit/window")
async def _open_window(request):
    body = await request.json() if request.can_read_body else {}
    return web.json_response(WINDOW.open(bool(body.get("unload", False))))


@routes.get("/perfusion_kit/window")
async def _read_window(request):
    return web.json_response(WINDOW.read())


class PerfusionKitImages:
    """Input images as one IMAGE batch and their MASKs (1 - alpha), as LoadImage gives a still image.

    This 0.33 tree's LoadImage decodes every file through PyAV (``VideoFromFile``), which the lent
    machine lacks and the kit cannot carry (see scripts/device/stubs/av); Pillow reads them here."""

    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("IMAGE", "MASK")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"names": ("STRING", {"multiline": True, "tooltip": "Input files, one a line."})}}

    def load(self, names):
        images, masks = [], []
        for name in filter(None, (line.strip() for line in names.splitlines())):
            with Image.open(folder_paths.get_annotated_filepath(name)) as img:
                rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255
            images.append(torch.from_numpy(rgba[..., :3].copy()))
            masks.append(1.0 - torch.from_numpy(rgba[..., 3].copy()))
        if not images:
            raise ValueError("names: list at least one input image")
        return torch.stack(images), torch.stack(masks)


class PerfusionKitRerun:
    """The model, unchanged; runs every time, so the nodes after it do too."""

    CATEGORY = CATEGORY
    FUNCTION = "run"
    RETURN_TYPES = ("MODEL",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    @classmethod
    def IS_CHANGED(cls, **_):
        return float("nan")

    def run(self, model):
        return (model,)


class PerfusionKitConcepts:
    """`count` concept files of random values for this model and CLIP (its layers, encoders and
    fingerprint, so the real loader takes them): what sampling costs does not depend on the values.
    u = i* (C = identity) keeps i*ᵀu > 0."""

    CATEGORY = CATEGORY
    FUNCTION = "write"
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL",),
                "clip": ("CLIP",),
                "count": ("INT", {"default": 4, "min": 1, "max": 26}),
                "subfolder": ("STRING", {"default": "kit"}),
            }
        }

    def write(self, model, clip, count, subfolder):
        synth = pack_module("benchmarks.synth")
        folder = Path(folder_paths.get_folder_paths("perfusion")[0]) / subfolder
        names = synth.write_concepts(pack_module(""), model, clip, folder, count)
        return {"ui": {"concepts": [f"{subfolder}/{n}" for n in names], "words": synth.concept_words(count)}}


class PerfusionKitGradients:
    """The first micro-batch's gradients of the word embedding and every V target, computed in
    `precision` and in fp32 on the same weights, images, batch and noise: cosine per tensor, and
    entries that underflowed to zero where fp32's are not."""

    CATEGORY = CATEGORY
    FUNCTION = "compare"
    OUTPUT_NODE = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL",),
                "clip": ("CLIP",),
                "vae": ("VAE",),
                "images": ("IMAGE",),
                "precision": (["auto", "fp16", "bf16"],),
                "resolution": ("INT", {"default": 512, "min": 64, "max": 2048, "step": 64}),
                "batch_size": ("INT", {"default": 4, "min": 1, "max": 64}),
                "covariance_prompts": (
                    "INT",
                    {
                        "default": pack_module("perfusion_core.defaults").COVARIANCE_PROMPTS,
                        "min": 64,
                        "max": 100000,
                    },
                ),
            }
        }

    def compare(self, model, clip, vae, images, precision, resolution, batch_size, covariance_prompts):
        training = pack_module("perfusion_core.training")
        trainer = pack_module("nodes.trainer")
        jobs = pack_module("perfusion_core.training_job")
        config = training.TrainingConfig(steps=1, batch_size=batch_size, resolution=resolution, seed=0)
        grads, dtypes = {}, {}
        for choice in (precision, "fp32"):
            with torch.inference_mode(False), torch.enable_grad():
                job = jobs.TrainingJob(
                    "hugsy", "teddy", images, config, covariance_prompts=covariance_prompts, precision=choice
                )
                with trainer.open_run(model, clip, vae, job) as run:
                    generator = torch.Generator().manual_seed(0)
                    batch = training.plan_batch(generator, run.n_images, config.templates, batch_size, 0.5)
                    grads[choice] = run.gradients(batch, run.noise(batch_size, generator))
                    dtypes[choice] = run.precision.name
        rows = {}
        for name, ref in grads["fp32"].items():
            got = grads[precision][name]
            cosine = float(torch.nn.functional.cosine_similarity(got.flatten(), ref.flatten(), dim=0))
            rows[name] = {
                "cosine": cosine if math.isfinite(cosine) else None,
                "underflowed": int(((got == 0) & (ref != 0)).sum()),
                "norm_fp32": float(ref.norm()),
            }
        return {"ui": {"gradients": [{"precision": precision, "dtype": dtypes[precision], "tensors": rows}]}}


NODE_CLASS_MAPPINGS = {
    "PerfusionKitImages": PerfusionKitImages,
    "PerfusionKitRerun": PerfusionKitRerun,
    "PerfusionKitConcepts": PerfusionKitConcepts,
    "PerfusionKitGradients": PerfusionKitGradients,
}
