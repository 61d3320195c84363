"""The real ComfyUI host for benchmarks, the pack as it imported it, and process-memory sampling."""

from __future__ import annotations

import importlib
import statistics
import sys
import threading
import time
import types
from pathlib import Path

import psutil

from harness.basedir import PACK_DIR_NAME
from harness.inprocess import ComfyHost

PACK_MODULES = (
    "perfusion_core.concept",
    "perfusion_core.concept_file",
    "perfusion_core.concept_writer",
    "nodes.model_patch",
    "nodes.nodes_loader",
    "nodes.covariance_cache",
)


def start_host(base_dir: Path, checkpoints: tuple[str, ...]) -> ComfyHost:
    """The in-process host with the pack loaded (one per process)."""
    return ComfyHost.get(base_dir, checkpoints=checkpoints, load_pack=True)


def pack(host: ComfyHost) -> types.ModuleType:
    """The pack as ComfyUI imported it (its module name is the custom-node path in ComfyUI 0.3.75)."""
    name = "comfyui-perfusion"
    if name not in sys.modules:
        name = str(host.layout.custom_nodes / PACK_DIR_NAME)
    for sub in PACK_MODULES:
        importlib.import_module(f"{name}.{sub}")
    return sys.modules[name]


def load_checkpoint(host: ComfyHost, layout: str):
    """(MODEL, CLIP, VAE) of a fixture through the host's own CheckpointLoaderSimple."""
    ckpt = host.add_checkpoint(layout)
    return host.node_class("CheckpointLoaderSimple")().load_checkpoint(ckpt)[:3]


def median(values) -> float:
    return float(statistics.median(values)) if values else float("nan")


def rss() -> int:
    return psutil.Process().memory_info().rss


class PeakRss:
    """Peak resident memory of this process while the block runs, sampled every `interval` seconds.

    `delta` is the peak above the RSS at entry: what the block itself needed on top of what was loaded.
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        process = psutil.Process()
        while not self._stop.is_set():
            self.peak = max(self.peak, process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self.start = self.peak = rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, rss())

    @property
    def delta(self) -> int:
        return self.peak - self.start
