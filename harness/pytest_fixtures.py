"""pytest fixtures for tests that drive a real ComfyUI host.

Enable with ``pytest_plugins = ["harness.pytest_fixtures"]`` in ``tests/conftest.py``.

Fixtures (all session-scoped; ComfyUI state is per process):

* ``tiny_ckpt_name`` - ``ckpt_name`` of the tiny SD15 fixture (3 attn2 layers), linked into both hosts.
* ``comfy_host`` - :class:`harness.inprocess.ComfyHost`: the real executor in this process, with the
  tiny fixture, the harness test nodes (``HarnessRaise``, ``HarnessProgress``) and the pack.
* ``sdxl_ckpt_name`` - ``ckpt_name`` of the SDXL-family fixture (31 attn2 layers), linked into the server.
* ``comfy_server`` - :class:`harness.server.ComfyServer`: ComfyUI's ``main.py`` on a free port, same
  contents plus the SDXL fixture. Starting it takes a few seconds; use it from ``@pytest.mark.slow`` tests.

The pack (``custom_nodes/comfyui-perfusion`` -> repo root) is loaded when the repo root has an
``__init__.py``; ``HARNESS_LOAD_PACK=0`` / ``1`` forces it off / on. When it is loaded and fails to
import, ``comfy_host`` errors with ComfyUI's import log.
"""

from __future__ import annotations

import os

import pytest

from harness.basedir import harness_test_nodes
from harness.fixture_checkpoint import fixture_checkpoint
from harness.paths import comfyui_path, host_description, repo_root


def pytest_report_header(config) -> str:
    """Which ComfyUI this run tests (the console says so at the top)."""
    return f"ComfyUI host: {host_description()} at {comfyui_path()}"


def pack_should_load() -> bool:
    flag = os.environ.get("HARNESS_LOAD_PACK", "").strip().lower()
    if flag in ("0", "false", "no", "off"):
        return False
    if flag in ("1", "true", "yes", "on"):
        return True
    return (repo_root() / "__init__.py").is_file()


@pytest.fixture(scope="session")
def tiny_ckpt_name() -> str:
    return fixture_checkpoint("tiny").name


@pytest.fixture(scope="session")
def sdxl_ckpt_name() -> str:
    """``ckpt_name`` of the SDXL-family fixture (31 attn2 layers, CLIP-L + bigG), in the server."""
    return fixture_checkpoint("sdxl").name


@pytest.fixture(scope="session")
def comfy_host(tmp_path_factory, tiny_ckpt_name):
    from harness.inprocess import ComfyHost

    host = ComfyHost.current()
    if host is None:
        host = ComfyHost.get(
            tmp_path_factory.mktemp("comfy-host"),
            checkpoints=["tiny"],
            load_pack=pack_should_load(),
            custom_nodes=harness_test_nodes(),
        )
    else:  # started earlier in this process (e.g. by a test module): reuse it
        host.add_checkpoint("tiny")
    yield host
    host.unload_all()


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory, tiny_ckpt_name, sdxl_ckpt_name):
    from harness.server import ComfyServer

    with ComfyServer(
        tmp_path_factory.mktemp("comfy-server"),
        checkpoints=["tiny", "sdxl"],
        load_pack=pack_should_load(),
        custom_nodes=harness_test_nodes(),
    ) as server:
        yield server
