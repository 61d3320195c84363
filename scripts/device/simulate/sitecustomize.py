"""The lent GPU machine's missing packages, simulated in a process here (the device kit's CPU rehearsal).

``benchmarks.gpu_check --simulate-device`` starts ComfyUI with this folder first on ``PYTHONPATH``:
Python imports ``sitecustomize`` at start-up, and every top-level module named in
``$PERFUSION_KIT_BLOCK`` (comma-separated: what the machine lacks and the bundle does not carry) then
fails to import, as it would there. Start-up, the pack and the kit must cope without them.
"""

import os
import sys

_BLOCKED = frozenset(filter(None, os.environ.get("PERFUSION_KIT_BLOCK", "").split(",")))


class _NotOnTheDevice:
    """A meta-path finder that refuses the blocked modules before any other finder sees them."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named '{name}' (not on the lent GPU machine)", name=name)
        return None


if _BLOCKED:
    sys.meta_path.insert(0, _NotOnTheDevice())
