"""Test/demo/benchmark harness that drives a real ComfyUI host.

Light to import: nothing here imports torch or ComfyUI at import time. Modules:

* :mod:`harness.paths` - repo root, ComfyUI location, cache folder.
* :mod:`harness.fixture_checkpoint` - deterministic few-MB SD1.5-layout checkpoints.
* :mod:`harness.basedir` - prepares a ComfyUI ``--base-directory`` (models, custom nodes, I/O folders).
* :mod:`harness.inprocess` - :class:`~harness.inprocess.ComfyHost`, the real executor in this process.
* :mod:`harness.server` - :class:`~harness.server.ComfyServer`, ComfyUI's ``main.py`` over HTTP/websocket.
* :mod:`harness.pytest_fixtures` - pytest fixtures built on the above.
* :mod:`harness.graph` - :class:`~harness.graph.Graph`, the one builder of API prompts (tests, demo,
  benchmarks and ``workflows/build_workflows.py``); :mod:`harness.perfusion_graphs` - the graphs they share.
"""

from harness.paths import cache_dir, comfyui_path, repo_root

__all__ = ["cache_dir", "comfyui_path", "repo_root"]
