"""Run prompts through ComfyUI's real ``PromptExecutor`` inside this Python process.

Only the transport is replaced: validation (``execution.validate_prompt``), the executor, its caches,
the node registry (core nodes, ``comfy_extras``, custom nodes loaded from the base directory's
``custom_nodes/``), ``comfy.utils.ProgressBar`` and ``server.PromptServer`` are the host's own. The
server's ``send_sync`` records every event it would have sent over the websocket.

ComfyUI keeps its state in module globals (parsed CLI args, ``folder_paths``, the node registry), so
there can be only one host per process: :meth:`ComfyHost.get` returns a singleton and refuses a second
base directory.

Typical use::

    host = ComfyHost.get(tmp_dir, checkpoints=["tiny"], load_pack=True)
    result = host.run(prompt)
    assert result.success, result.error_text
    (image,) = host.images(result)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import gc
import importlib
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from harness.basedir import (
    PACK_DIR_NAME,
    BaseDir,
    CheckpointLike,
    link_into,
    prepare_base_dir,
    resolve_checkpoint,
)
from harness.errors import HostError, HostStartError, error_from_status, format_error
from harness.images import load_image
from harness.paths import comfyui_path, use_cpu

__all__ = ["ComfyHost", "HostError", "HostStartError", "RunResult", "format_error"]

log = logging.getLogger(__name__)

# Host modules that must come from the ComfyUI folder. The repo root has a `nodes/` package (the
# pack's node definitions): if the repo root precedes ComfyUI on sys.path when ComfyUI first imports
# `nodes`, the host silently gets the wrong module.
_HOST_TOP_LEVEL_MODULES = ("nodes", "execution", "server", "folder_paths", "utils", "comfy")

MessageCallback = Callable[[Any, Any], None]


@dataclass
class RunResult:
    """Outcome of :meth:`ComfyHost.run`.

    ``error_kind`` is ``None`` on success, else ``"validation"`` (``error`` is then the body the HTTP
    API answers with status 400: ``{"error": {type, message, details, extra_info}, "node_errors": {...}}``),
    ``"execution"`` (``error`` is the ``execution_error`` event's data: ``node_id``, ``node_type``,
    ``exception_type``, ``exception_message``, ``traceback`` (list of str), ``current_inputs``,
    ``executed``...) or ``"interrupted"`` (the ``execution_interrupted`` event's data).
    """

    success: bool
    prompt_id: str
    outputs: dict = field(default_factory=dict)  # history "outputs": {node_id: {"images": [...], ...}}
    error: dict | None = None
    error_kind: str | None = None
    node_errors: dict = field(default_factory=dict)
    messages: list[tuple[Any, Any]] = field(default_factory=list)  # (event, data) as sent to the client
    cached_nodes: list[str] = field(default_factory=list)
    executed_nodes: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    @property
    def interrupted(self) -> bool:
        return self.error_kind == "interrupted"

    @property
    def error_text(self) -> str:
        return format_error(self.error_kind, self.error, self.node_errors)

    def events(self, name: Any) -> list[Any]:
        """Data of every message of one event type, e.g. ``result.events("progress")``."""
        return [data for event, data in self.messages if event == name]

    def raise_for_error(self) -> RunResult:
        if not self.success:
            raise HostError(self.error_text)
        return self


class _Recorder:
    """Where the host's ``PromptServer`` sends its events in this process: recorded, and passed to an
    optional listener, instead of queued for websockets (no event loop runs them here)."""

    def __init__(self) -> None:
        self.messages: list[tuple[Any, Any]] = []
        self.listener: MessageCallback | None = None

    def send_sync(self, event, data, sid=None) -> None:
        self.messages.append((event, data))
        if self.listener is not None:
            self.listener(event, data)


def _prompt_server(server_module, recorder: _Recorder):
    """The host's own ``server.PromptServer``, built as main.py builds it (on an event loop that never
    runs: no HTTP here), with its events going to `recorder`. Everything else the executor, the
    progress hook and nodes read of it (ids, feature flags, routes, managers) is the host's."""
    instance = server_module.PromptServer(asyncio.new_event_loop())
    instance.send_sync = recorder.send_sync
    instance.queue_updated = lambda: None  # main.py's queue status: there is no queue here
    instance.last_prompt_id = None  # main.py's prompt worker sets it per prompt; none has run yet
    return instance


class _LogCapture(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record):
        try:
            self.records.append(record.getMessage())
        except Exception:  # pragma: no cover
            pass


def _run_coroutine(coro):
    """``asyncio.run`` that also works when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
        loop_running = True
    except RuntimeError:
        loop_running = False
    if not loop_running:  # outside the except block: keeps that RuntimeError out of logged tracebacks
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class ComfyHost:
    """The real ComfyUI executor in this process (one per process; see :meth:`get`)."""

    _instance: ClassVar[ComfyHost | None] = None
    _start_error: ClassVar[BaseException | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    # ---- construction ---------------------------------------------------------------------------------

    @classmethod
    def get(
        cls,
        base_dir: str | os.PathLike | None = None,
        *,
        checkpoints: Iterable[CheckpointLike] = ("tiny",),
        load_pack: bool = True,
        custom_nodes: Mapping[str, str | os.PathLike] | None = None,
    ) -> ComfyHost:
        """The process's host, started on first call.

        ``base_dir``: the ``--base-directory`` to prepare (a fresh temp dir when None). Later calls may
        pass None or the same folder; another folder, another ``load_pack`` or new ``custom_nodes``
        raise :class:`HostStartError` (ComfyUI's module-level state cannot be rebuilt). Checkpoints
        asked for by later calls are linked in. When ``load_pack`` is True and the pack fails to
        import, this raises with ComfyUI's import log.
        """
        with cls._lock:
            if cls._instance is None:
                if cls._start_error is not None:
                    raise HostStartError(f"the in-process host failed to start earlier: {cls._start_error}")
                try:
                    cls._instance = cls(base_dir, checkpoints, load_pack, custom_nodes)
                except BaseException as e:
                    cls._start_error = e
                    raise
                return cls._instance
            host = cls._instance
            if base_dir is not None and Path(base_dir).resolve() != host.base_dir:
                raise HostStartError(
                    f"a ComfyHost already runs in this process with base dir {host.base_dir}; "
                    f"cannot start another with {Path(base_dir).resolve()}"
                )
            if load_pack != host.load_pack:
                raise HostStartError(f"the running ComfyHost was started with load_pack={host.load_pack}")
            missing = set(custom_nodes or {}) - set(host.custom_node_names)
            if missing:
                raise HostStartError(f"custom nodes {sorted(missing)} were not loaded when the host started")
            for item in checkpoints:
                host.add_checkpoint(item)
            return host

    @classmethod
    def current(cls) -> ComfyHost | None:
        """The running host, or None."""
        return cls._instance

    def __init__(self, base_dir, checkpoints, load_pack, custom_nodes):
        """Use :meth:`get`."""
        if base_dir is None:
            import tempfile

            base_dir = tempfile.mkdtemp(prefix="comfyhost-")
        self.layout: BaseDir = prepare_base_dir(base_dir, checkpoints, load_pack, custom_nodes)
        self.base_dir: Path = self.layout.root
        self.load_pack = load_pack
        self.custom_node_names: tuple[str, ...] = tuple(custom_nodes or ())
        self.comfy_root = comfyui_path()
        self.client_id = f"harness-{uuid.uuid4().hex[:8]}"
        self.import_log: list[str] = []
        self._recorder = _Recorder()
        self._run_lock = threading.Lock()
        t0 = time.perf_counter()
        self._boot()
        self.startup_s = time.perf_counter() - t0

    def _check_module_origins(self) -> None:
        for name in _HOST_TOP_LEVEL_MODULES:
            mod = sys.modules.get(name)
            if mod is None:
                continue
            origin = getattr(mod, "__file__", None) or next(iter(getattr(mod, "__path__", [])), None)
            if origin is None or not Path(origin).resolve().is_relative_to(self.comfy_root):
                raise HostStartError(
                    f"module {name!r} was already imported from {origin}, not from ComfyUI at "
                    f"{self.comfy_root}. Do not import the repo's `nodes` package (or anything else that "
                    "shadows a ComfyUI top-level module) as a top-level module before starting the host."
                )

    def _parse_args(self) -> None:
        base = str(self.base_dir)
        argv = [
            "main.py",
            *(["--cpu"] if use_cpu() else []),
            "--base-directory",
            base,
            "--output-directory",
            str(self.layout.output),
            "--input-directory",
            str(self.layout.input),
            "--disable-api-nodes",
        ]
        if "comfy.cli_args" in sys.modules:
            # Something imported comfy before the host (without argument parsing): set what we need.
            from comfy.cli_args import args

            args.cpu = use_cpu()
            args.base_directory = base
            args.output_directory = str(self.layout.output)
            args.input_directory = str(self.layout.input)
            args.disable_api_nodes = True
            if "comfy.model_management" in sys.modules:
                log.warning("comfy.model_management was imported before ComfyHost; --cpu may not apply")
            return
        import comfy.options

        saved = sys.argv
        sys.argv = argv
        try:
            comfy.options.enable_args_parsing()
            importlib.import_module("comfy.cli_args")
        finally:
            sys.argv = saved

    def _configure_folders(self):
        import folder_paths

        if Path(folder_paths.base_path).resolve() != self.base_dir:
            # folder_paths was imported (with another base path) before the host: rebuild its tables.
            folder_paths = importlib.reload(folder_paths)
        folder_paths.set_output_directory(str(self.layout.output))
        folder_paths.set_input_directory(str(self.layout.input))
        folder_paths.set_temp_directory(str(self.layout.temp))
        folder_paths.set_user_directory(str(self.layout.user))
        # What main.py's apply_custom_paths() adds (models saved by nodes land in output/).
        out = folder_paths.get_output_directory()
        for name, sub in (
            ("checkpoints", "checkpoints"),
            ("clip", "clip"),
            ("vae", "vae"),
            ("diffusion_models", "diffusion_models"),
            ("loras", "loras"),
        ):
            folder_paths.add_model_folder_path(name, os.path.join(out, sub))
        return folder_paths

    def _boot(self) -> None:
        root = str(self.comfy_root)
        if root in sys.path:  # first, ahead of the repo root and its `nodes/` (_HOST_TOP_LEVEL_MODULES)
            sys.path.remove(root)
        sys.path.insert(0, root)
        self._check_module_origins()
        self._parse_args()
        self.folder_paths = self._configure_folders()

        # utils.extra_config must be imported before `nodes`: nodes.py puts comfy/ first on sys.path, after
        # which `utils` would resolve to comfy/utils.py (and server.py's imports would break).
        importlib.import_module("utils.extra_config")
        import comfy.model_management
        import comfy.utils
        import execution
        import hook_breaker_ac10a0
        import server

        import nodes

        self._mm = comfy.model_management
        self._execution = execution
        self._nodes = nodes
        self._transport = _prompt_server(server, self._recorder)

        capture = _LogCapture()
        logging.getLogger().addHandler(capture)
        hook_breaker_ac10a0.save_functions()
        try:
            _run_coroutine(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
        finally:
            hook_breaker_ac10a0.restore_functions()
            logging.getLogger().removeHandler(capture)
        self.import_log = capture.records

        expected = ([PACK_DIR_NAME] if self.load_pack else []) + [
            Path(n).stem if n.endswith(".py") else n for n in self.custom_node_names
        ]
        # Keys are the folder name for packages but the full path minus ".py" for single-file nodes.
        loaded = {Path(k).name for k in nodes.LOADED_MODULE_DIRS}
        failed = [n for n in expected if n not in loaded]
        if failed:
            ours = [r for r in self.import_log if str(self.layout.custom_nodes) in r] or self.import_log
            raise HostStartError(
                f"custom node package(s) {failed} failed to import into ComfyUI. Host log:\n"
                + "\n".join(ours[-40:])
            )

        self._install_progress_hook(comfy.utils)
        self._executor = execution.PromptExecutor(
            self._transport, **executor_options(self.comfy_root, execution)
        )

    def _install_progress_hook(self, comfy_utils) -> None:
        """The hook main.py's ``hijack_progress`` installs, sending to our transport. A preview image
        (``("JPEG", PIL image, max size)``) is recorded as a ``BinaryEventTypes.UNENCODED_PREVIEW_IMAGE``
        event when the client did not announce ``supports_preview_metadata``, as main.py sends it; the
        executor's progress handler sends ``PREVIEW_IMAGE_WITH_METADATA`` to clients that did."""
        from comfy_api import feature_flags
        from comfy_execution.progress import get_progress_state
        from comfy_execution.utils import get_executing_context
        from protocol import BinaryEventTypes

        transport = self._transport
        mm = self._mm

        def hook(value, total, preview_image, prompt_id=None, node_id=None):
            ctx = get_executing_context()
            if prompt_id is None and ctx is not None:
                prompt_id = ctx.prompt_id
            if node_id is None and ctx is not None:
                node_id = ctx.node_id
            mm.throw_exception_if_processing_interrupted()
            prompt_id = prompt_id if prompt_id is not None else transport.last_prompt_id
            node_id = node_id if node_id is not None else transport.last_node_id
            get_progress_state().update_progress(node_id, value, total, preview_image)
            transport.send_sync(
                "progress",
                {"value": value, "max": total, "prompt_id": prompt_id, "node": node_id},
                transport.client_id,
            )
            if preview_image is not None and not feature_flags.supports_feature(
                transport.sockets_metadata, transport.client_id, "supports_preview_metadata"
            ):
                transport.send_sync(
                    BinaryEventTypes.UNENCODED_PREVIEW_IMAGE, preview_image, transport.client_id
                )

        comfy_utils.set_progress_bar_global_hook(hook)

    # ---- running prompts ------------------------------------------------------------------------------

    def validate(self, prompt: Mapping) -> tuple[bool, dict | None, dict]:
        """``(ok, error, node_errors)`` from ComfyUI's own validation (on a copy of the prompt)."""
        valid = _run_coroutine(self._execution.validate_prompt(str(uuid.uuid4()), _copy_prompt(prompt), None))
        return bool(valid[0]), valid[1], valid[3]

    def run(
        self,
        prompt: Mapping,
        *,
        client_id: str | None = None,
        on_message: MessageCallback | None = None,
        check: bool = False,
    ) -> RunResult:
        """Validate and execute one API-format prompt, like ``POST /prompt`` + the prompt worker.

        The prompt is copied through JSON first (validation writes into it; links become lists exactly as
        over HTTP). ``on_message(event, data)`` is called for each event as it is sent (e.g. to
        :meth:`interrupt` after the first ``progress``). Failures come back in the result
        (``success=False``); ``check=True`` raises :class:`HostError` instead.
        """
        with self._run_lock:
            result = self._run_locked(prompt, client_id or self.client_id, on_message)
        return result.raise_for_error() if check else result

    def _run_locked(self, prompt, client_id, on_message) -> RunResult:
        execution = self._execution
        prompt = _copy_prompt(prompt)
        prompt_id = str(uuid.uuid4())
        t0 = time.perf_counter()
        valid = _run_coroutine(execution.validate_prompt(prompt_id, prompt, None))
        if not valid[0]:
            return RunResult(
                success=False,
                prompt_id=prompt_id,
                error={"error": valid[1], "node_errors": valid[3]},
                error_kind="validation",
                node_errors=valid[3],
                duration_s=time.perf_counter() - t0,
            )
        transport, recorder = self._transport, self._recorder
        recorder.messages = []
        recorder.listener = on_message
        transport.last_prompt_id = prompt_id
        ex = self._executor
        try:
            _run_coroutine(ex.execute_async(prompt, prompt_id, {"client_id": client_id}, valid[2]))
            # what the prompt worker sends when a prompt is done
            transport.send_sync("executing", {"node": None, "prompt_id": prompt_id}, client_id)
        finally:
            recorder.listener = None
        status = list(ex.status_messages)
        kind, error = error_from_status(status)
        cached = next((d["nodes"] for e, d in status if e == "execution_cached"), [])
        executed = [d["node"] for e, d in recorder.messages if e == "executing" and d.get("node") is not None]
        return RunResult(
            success=bool(ex.success) and kind is None,
            prompt_id=prompt_id,
            outputs=copy.deepcopy(getattr(ex, "history_result", {}).get("outputs", {})),
            error=error,
            error_kind=kind,
            node_errors=valid[3],
            messages=list(recorder.messages),
            cached_nodes=list(cached),
            executed_nodes=executed,
            duration_s=time.perf_counter() - t0,
        )

    def interrupt(self) -> None:
        """Set ComfyUI's interrupt flag (what ``POST /interrupt`` does). The executor clears it when a
        prompt starts, so call it while a prompt runs (from ``on_message`` or another thread)."""
        self._nodes.interrupt_processing(True)

    # ---- outputs, models, folders ---------------------------------------------------------------------

    def image_paths(self, result: RunResult, node_id: str | None = None) -> list[Path]:
        paths = []
        for nid, out in result.outputs.items():
            if node_id is not None and str(nid) != str(node_id):
                continue
            for item in out.get("images", []) or []:
                base = self.folder_paths.get_directory_by_type(item.get("type", "output"))
                if base is None:
                    raise ValueError(f"unknown image type {item.get('type')!r}")
                paths.append(Path(base) / item.get("subfolder", "") / item["filename"])
        return paths

    def images(self, result: RunResult, node_id: str | None = None) -> list[np.ndarray]:
        """Images saved/previewed by the run (all output nodes, or one) as float32 HxWx3 in [0, 1]."""
        return [load_image(p) for p in self.image_paths(result, node_id)]

    def node_class(self, name: str) -> type:
        try:
            return self._nodes.NODE_CLASS_MAPPINGS[name]
        except KeyError:
            raise KeyError(f"node {name!r} is not registered in the host") from None

    @property
    def node_names(self) -> list[str]:
        return sorted(self._nodes.NODE_CLASS_MAPPINGS)

    def folder(self, name: str) -> list[Path]:
        """The paths ComfyUI's ``folder_paths`` has for a model folder name (e.g. "checkpoints")."""
        return [Path(p) for p in self.folder_paths.get_folder_paths(name)]

    def filenames(self, name: str) -> list[str]:
        """What a dropdown for that folder lists (``folder_paths.get_filename_list``)."""
        return list(self.folder_paths.get_filename_list(name))

    def add_file(self, folder_name: str, source: str | os.PathLike, name: str | None = None) -> str:
        """Link a file into the first path of a model folder (``models/<folder_name>`` when ComfyUI has
        no such folder registered yet); returns the name prompts use."""
        paths = self.folder(folder_name) if folder_name in self.folder_paths.folder_names_and_paths else []
        target = paths[0] if paths else self.base_dir / "models" / folder_name
        dest = link_into(target, source, name)
        self.folder_paths.filename_list_cache.pop(folder_name, None)
        return dest.name

    def add_checkpoint(self, item: CheckpointLike, name: str | None = None) -> str:
        """Link a fixture (layout name / FixtureSpec) or a checkpoint file in; returns its ckpt_name."""
        return self.add_file("checkpoints", resolve_checkpoint(item), name)

    def unload_all(self) -> None:
        """Unload every model ComfyUI holds and empty its caches (what ``/free`` does for models)."""
        self._mm.unload_all_models()
        gc.collect()
        self._mm.soft_empty_cache()

    def reset_cache(self) -> None:
        """Drop the executor's node output cache (``/free`` with ``free_memory``)."""
        self._executor.reset()

    def __repr__(self) -> str:
        return f"ComfyHost(base_dir={str(self.base_dir)!r}, load_pack={self.load_pack})"


def executor_options(comfy_root: Path, execution) -> dict[str, Any]:
    """The keyword arguments the host's main.py builds its ``PromptExecutor`` with, as
    ``--cache-classic`` sets them: the classic cache, every cache size 0 (no LRU, no RAM budget). The
    names are read from main.py itself, so a release that adds one (0.33's ``ram_inactive``, or the
    Dec-2024 ``lru_size`` before ``cache_args``) gets it here too."""
    import ast

    path = comfy_root / "main.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "PromptExecutor"):
            continue
        options: dict[str, Any] = {}
        for keyword in node.keywords:
            if keyword.arg == "cache_type":
                options["cache_type"] = execution.CacheType.CLASSIC
            elif keyword.arg == "cache_args" and isinstance(keyword.value, ast.Dict):
                options["cache_args"] = {ast.literal_eval(k): 0 for k in keyword.value.keys}
            elif keyword.arg == "lru_size":
                options["lru_size"] = 0
            else:
                raise HostStartError(f"{path}: PromptExecutor takes '{keyword.arg}', unknown to the harness")
        return options
    raise HostStartError(f"{path} builds no PromptExecutor")


def _copy_prompt(prompt: Mapping) -> dict:
    try:
        return json.loads(json.dumps(prompt))
    except TypeError as e:
        raise TypeError(f"prompt is not JSON-serialisable (an API prompt must be): {e}") from None
