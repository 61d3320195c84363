"""ComfyUI's own ``main.py`` in a subprocess, driven over real HTTP and the real websocket.

Everything a user's browser would use is real: the aiohttp server, the prompt queue and worker thread,
history, ``/view``, ``/interrupt``, ``/free`` and the bundled frontend. Typical use::

    with ComfyServer(tmp_dir, checkpoints=["tiny"]) as srv:
        result = srv.run(prompt)              # queue + wait (websocket) + /history
        assert result.success, result.error_text
        history, messages = result            # unpacks like a tuple
        (image,) = srv.images(history)
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import requests

from harness.basedir import BaseDir, CheckpointLike, prepare_base_dir
from harness.errors import HostError, PromptRejected, ServerStartError, error_from_status, format_error
from harness.images import decode_image
from harness.paths import comfyui_path, use_cpu

__all__ = ["ComfyServer", "ServerResult", "free_port", "host_cli_flags"]

# Flags the harness passes only where the host's main.py knows them (older hosts lack them).
_OPTIONAL_FLAGS: tuple[tuple[str, ...], ...] = (
    ("--disable-auto-launch",),
    ("--disable-api-nodes",),  # also keeps the frontend from calling out to the internet
    ("--database-url", "sqlite:///:memory:"),  # the default DB lives inside the ComfyUI folder
)

# For hosts whose main.py has no --base-directory: run main.py as __main__ after moving every folder
# folder_paths derives from the ComfyUI folder (models/, custom_nodes/, input/, output/, temp/, user/)
# into the base directory, as --base-directory does on newer hosts. argv: -c <code> BASE main.py-args.
_REBASED_MAIN = """
import os, runpy, sys
base = os.path.realpath(sys.argv.pop(1))
sys.argv[0] = "main.py"
try:
    import comfy.options
    comfy.options.enable_args_parsing()
except ImportError:
    pass
import folder_paths as fp
old = os.path.realpath(fp.base_path)
def rebase(p):
    rel = os.path.relpath(os.path.realpath(p), old)
    return p if rel == ".." or rel.startswith(".." + os.sep) else os.path.normpath(os.path.join(base, rel))
fp.base_path = base
fp.models_dir = rebase(fp.models_dir)
for name, (paths, exts) in list(fp.folder_names_and_paths.items()):
    fp.folder_names_and_paths[name] = ([rebase(p) for p in paths], exts)
for attr in ("output_directory", "temp_directory", "input_directory", "user_directory"):
    if isinstance(getattr(fp, attr, None), str):
        setattr(fp, attr, rebase(getattr(fp, attr)))
runpy.run_path("main.py", run_name="__main__")
"""


@functools.cache
def host_cli_flags(comfy_root: str | os.PathLike, python: str = sys.executable) -> frozenset[str]:
    """The ``--flags`` the host's ``main.py --help`` lists (from ``comfy/cli_args.py``'s text when
    ``--help`` fails); empty when neither tells."""
    root = Path(comfy_root)
    try:
        proc = subprocess.run(
            [python, "main.py", "--help"], cwd=root, capture_output=True, text=True, timeout=120
        )
        text = proc.stdout if proc.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        text = ""
    if not text:
        try:
            text = (root / "comfy" / "cli_args.py").read_text(errors="replace")
        except OSError:
            return frozenset()
    return frozenset(re.findall(r"(?<![\w-])--[a-zA-Z0-9][\w-]*", text))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerResult:
    """A finished prompt: its ``/history`` entry and the websocket messages that carried its
    ``prompt_id`` (``{"type": ..., "data": ...}``). Unpacks as ``history, messages = result``."""

    prompt_id: str
    history: dict
    messages: list[dict] = field(default_factory=list)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.history, self.messages))

    @property
    def status(self) -> dict:
        return self.history.get("status", {})

    @property
    def outputs(self) -> dict:
        return self.history.get("outputs", {})

    @property
    def error_kind(self) -> str | None:
        return error_from_status(self.status.get("messages", []))[0]

    @property
    def error(self) -> dict | None:
        return error_from_status(self.status.get("messages", []))[1]

    @property
    def success(self) -> bool:
        return self.status.get("status_str") == "success" and self.error_kind is None

    @property
    def error_text(self) -> str:
        return format_error(self.error_kind, self.error)

    def events(self, name: str) -> list[dict]:
        return [m["data"] for m in self.messages if m.get("type") == name]


class _WebSocketListener:
    """One websocket connection (``/ws?clientId=...``) read by a background thread."""

    def __init__(self, url: str):
        self.url = url
        self.messages: list[dict] = []
        self.cond = threading.Condition()
        self.error: BaseException | None = None
        self.closed = False
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ws = None
        self._thread = threading.Thread(target=self._main, name="comfy-ws", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"websocket {self.url} did not connect within {timeout}s")
        if self.error is not None:
            raise ConnectionError(f"websocket {self.url} failed: {self.error!r}") from self.error

    def _main(self) -> None:
        try:
            asyncio.run(self._read())
        except BaseException as e:  # recorded; waiters see it
            self.error = e
        finally:
            with self.cond:
                self.closed = True
                self.cond.notify_all()
            self._ready.set()

    async def _read(self) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(self.url, max_msg_size=0) as ws:
                self._ws, self._loop = ws, asyncio.get_running_loop()
                self._ready.set()
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        item = json.loads(msg.data)
                    elif msg.type == aiohttp.WSMsgType.BINARY:
                        kind = int.from_bytes(msg.data[:4], "big") if len(msg.data) >= 4 else None
                        item = {"type": "binary", "data": {"event": kind, "size": len(msg.data)}}
                    else:
                        break
                    with self.cond:
                        self.messages.append(item)
                        self.cond.notify_all()

    def close(self) -> None:
        if self._loop is not None and self._ws is not None and not self.closed:
            try:
                asyncio.run_coroutine_threadsafe(self._ws.close(), self._loop).result(5)
            except Exception:  # already closing / loop gone
                pass
        self._thread.join(5)


class ComfyServer:
    """``python main.py --cpu --listen 127.0.0.1 --port P --base-directory D`` as a subprocess.

    The base directory is prepared like the in-process host's (:func:`harness.basedir.prepare_base_dir`).
    Flags the host's ``main.py --help`` does not list are left out; a host without ``--base-directory``
    (Dec 2024) gets the same layout by a launcher that moves ``folder_paths``' folders into ``D`` before
    running ``main.py`` (see ``_REBASED_MAIN``). Output goes to ``D/comfyui-server.log``. ``start()``
    returns once ``/system_stats`` answers and the websocket is connected; it raises
    :class:`ServerStartError` with the log tail if the process dies or the timeout passes.
    """

    def __init__(
        self,
        base_dir: str | os.PathLike | None = None,
        *,
        checkpoints: Iterable[CheckpointLike] = ("tiny",),
        load_pack: bool = True,
        custom_nodes: Mapping[str, str | os.PathLike] | None = None,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 180.0,
        env: Mapping[str, str] | None = None,
    ):
        if base_dir is None:
            base_dir = tempfile.mkdtemp(prefix="comfyserver-")
        self.layout: BaseDir = prepare_base_dir(base_dir, checkpoints, load_pack, custom_nodes)
        self.base_dir = self.layout.root
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client_id = f"harness-{uuid.uuid4().hex[:8]}"
        self.log_path = self.base_dir / "comfyui-server.log"
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.extra_env = dict(env or {})
        self.startup_s: float | None = None
        self._proc: subprocess.Popen | None = None
        self._log_file = None
        self._ws: _WebSocketListener | None = None
        self._http = requests.Session()

    # ---- lifecycle ------------------------------------------------------------------------------------

    def host_flags(self) -> frozenset[str]:
        """The command-line flags this host's ``main.py`` accepts (probed once per host)."""
        return host_cli_flags(str(comfyui_path()), sys.executable)

    def command(self) -> list[str]:
        flags = self.host_flags()
        known = (lambda flag: flag in flags) if flags else (lambda flag: True)
        if known("--base-directory"):
            launch = ["main.py"]
            base = ["--base-directory", str(self.base_dir)]
        else:  # an older host: the same layout through folder_paths (see _REBASED_MAIN)
            launch = ["-c", _REBASED_MAIN, str(self.base_dir)]
            base = []
        optional = [arg for group in _OPTIONAL_FLAGS if known(group[0]) for arg in group]
        return [
            sys.executable,
            *launch,
            *(["--cpu"] if use_cpu() else []),
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            *base,
            *optional,
            *self.extra_args,
        ]

    def start(self) -> ComfyServer:
        if self._proc is not None:
            return self
        env = dict(os.environ)
        env.update(
            PYTHONUNBUFFERED="1",
            HF_HUB_OFFLINE="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            DO_NOT_TRACK="1",
            **self.extra_env,
        )
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        t0 = time.perf_counter()
        self._proc = subprocess.Popen(
            self.command(),
            cwd=comfyui_path(),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        atexit.register(self.stop)
        try:
            self._wait_ready(t0)
            self._ws = _WebSocketListener(f"ws://127.0.0.1:{self.port}/ws?clientId={self.client_id}")
            self._ws.start()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - t0
        return self

    def _wait_ready(self, t0: float) -> None:
        while True:
            if self._proc.poll() is not None:
                raise ServerStartError(
                    f"ComfyUI exited with code {self._proc.returncode} during startup.\n{self.log_text(60)}"
                )
            try:
                if self._http.get(f"{self.url}/system_stats", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.perf_counter() - t0 > self.startup_timeout:
                raise ServerStartError(
                    f"ComfyUI did not answer on {self.url} within {self.startup_timeout:.0f}s.\n"
                    f"{self.log_text(60)}"
                )
            time.sleep(0.25)

    def stop(self, timeout: float = 15.0) -> None:
        """Close the websocket, terminate the server and wait for it (kill after ``timeout``)."""
        if self._ws is not None:
            self._ws.close()
            self._ws = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(timeout)
            atexit.unregister(self.stop)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self._http.close()

    def __enter__(self) -> ComfyServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_text(self, tail: int | None = None) -> str:
        """The server's combined stdout/stderr (last ``tail`` lines when given)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-tail:]) if tail else text

    # ---- HTTP -----------------------------------------------------------------------------------------

    def _get(self, path: str, **kw) -> requests.Response:
        r = self._http.get(f"{self.url}{path}", timeout=kw.pop("timeout", 60), **kw)
        r.raise_for_status()
        return r

    def _post(self, path: str, payload: Any = None, **kw) -> requests.Response:
        return self._http.post(f"{self.url}{path}", json=payload, timeout=kw.pop("timeout", 60), **kw)

    def object_info(self, node: str | None = None) -> dict:
        """``/object_info`` (all nodes) or the entry of one node class."""
        if node is None:
            return self._get("/object_info").json()
        info = self._get(f"/object_info/{node}").json()
        if node not in info:
            raise KeyError(f"the server has no node {node!r}")
        return info[node]

    def queue(self, prompt: Mapping, client_id: str | None = None) -> str:
        """``POST /prompt``; returns the prompt_id. Raises :class:`PromptRejected` on HTTP 400."""
        payload = {"prompt": prompt, "client_id": client_id or self.client_id}
        r = self._post("/prompt", payload)
        if r.status_code == 400:
            raise PromptRejected(r.json())
        r.raise_for_status()
        return r.json()["prompt_id"]

    def history(self, prompt_id: str | None = None) -> dict:
        """The history entry of one prompt ({} while it is not finished), or the whole history."""
        if prompt_id is None:
            return self._get("/history").json()
        return self._get(f"/history/{prompt_id}").json().get(prompt_id, {})

    def wait(self, prompt_id: str, timeout: float = 300.0) -> ServerResult:
        """Block until the prompt finished (websocket ``executing`` with ``node: null``, or its history
        entry appears); returns the history entry and the websocket messages for that prompt.
        Messages only arrive for prompts queued with this server's ``client_id`` (the default)."""
        deadline = time.monotonic() + timeout
        ws = self._ws
        while True:
            if self._finished_on_ws(prompt_id) or time.monotonic() > deadline:
                break
            if not self.running:
                raise HostError(f"the ComfyUI server died while running {prompt_id}.\n{self.log_text(60)}")
            if ws is None or ws.closed:
                if self.history(prompt_id):
                    break
                time.sleep(0.25)
                continue
            with ws.cond:
                ws.cond.wait(0.5)
            if not self._finished_on_ws(prompt_id) and self.history(prompt_id):
                break
        entry = self.history(prompt_id)
        if not entry:
            raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout}s.\n{self.log_text(30)}")
        self._await_last_messages(prompt_id)
        return ServerResult(prompt_id, entry, self.messages(prompt_id))

    def _await_last_messages(self, prompt_id: str, grace: float = 10.0) -> None:
        """The host writes a prompt's history entry before its event loop has sent the run's last
        websocket messages (``execution_success``, then ``executing`` with ``node: null``): a result
        read as soon as the entry appears could miss them."""
        ws = self._ws
        end = time.monotonic() + grace
        while ws is not None and not ws.closed and not self._finished_on_ws(prompt_id):
            if time.monotonic() > end:
                break
            with ws.cond:
                ws.cond.wait(0.1)

    def _finished_on_ws(self, prompt_id: str) -> bool:
        if self._ws is None:
            return False
        with self._ws.cond:
            return any(
                m.get("type") == "executing"
                and m["data"].get("node") is None
                and m["data"].get("prompt_id") == prompt_id
                for m in self._ws.messages
            )

    def messages(self, prompt_id: str | None = None) -> list[dict]:
        """Websocket messages received so far (only those carrying ``prompt_id`` when given)."""
        if self._ws is None:
            return []
        with self._ws.cond:
            msgs = list(self._ws.messages)
        if prompt_id is None:
            return msgs
        return [
            m for m in msgs if isinstance(m.get("data"), dict) and m["data"].get("prompt_id") == prompt_id
        ]

    def run(self, prompt: Mapping, timeout: float = 300.0, *, check: bool = False) -> ServerResult:
        """Queue one prompt and wait for it. ``check=True`` raises :class:`HostError` when it failed."""
        result = self.wait(self.queue(prompt), timeout)
        if check and not result.success:
            raise HostError(result.error_text)
        return result

    def run_many(self, prompts: Iterable[Mapping], timeout: float = 600.0) -> list[ServerResult]:
        """Queue every prompt first, then collect each result (in order) over the one websocket."""
        ids = [self.queue(p) for p in prompts]
        deadline = time.monotonic() + timeout
        return [self.wait(pid, max(1.0, deadline - time.monotonic())) for pid in ids]

    def view(self, filename: str, subfolder: str = "", type: str = "output") -> bytes:  # noqa: A002
        """``GET /view``: the bytes of a saved file."""
        params = {"filename": filename, "subfolder": subfolder, "type": type}
        return self._get("/view", params=params).content

    def images(self, history_entry: Mapping | ServerResult, node_id: str | None = None) -> list[np.ndarray]:
        """The images of a history entry (all output nodes, or one), fetched through ``/view``."""
        if isinstance(history_entry, ServerResult):
            history_entry = history_entry.history
        out = []
        for nid, node_out in history_entry.get("outputs", {}).items():
            if node_id is not None and str(nid) != str(node_id):
                continue
            for item in node_out.get("images", []) or []:
                data = self.view(item["filename"], item.get("subfolder", ""), item.get("type", "output"))
                out.append(decode_image(data))
        return out

    def interrupt(self, prompt_id: str | None = None) -> None:
        """``POST /interrupt`` (global, or only if ``prompt_id`` is the running prompt)."""
        self._post("/interrupt", {"prompt_id": prompt_id} if prompt_id else {}).raise_for_status()

    def free(self, unload_models: bool = True, free_memory: bool = True) -> None:
        """``POST /free``: flags the worker to unload models / drop the node cache after its current job."""
        self._post("/free", {"unload_models": unload_models, "free_memory": free_memory}).raise_for_status()

    def __repr__(self) -> str:
        return f"ComfyServer(url={self.url!r}, base_dir={str(self.base_dir)!r}, pid={self.pid})"
