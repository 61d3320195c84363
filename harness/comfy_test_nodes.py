"""Tiny custom nodes the harness loads into ComfyUI to test error and interrupt paths.

This file is linked into a base directory's ``custom_nodes/`` as ``harness_test_nodes.py`` and imported
by ComfyUI itself, so it must stay self-contained (no ``harness`` imports). Node names start with
``Harness`` to avoid clashing with real nodes.
"""

import time

import comfy.model_management
import comfy.utils


class HarnessRaise:
    """Raises ``RuntimeError(message)`` when executed: a known execution error."""

    CATEGORY = "harness"
    FUNCTION = "run"
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "message": ("STRING", {"default": "harness test error"}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1}),
            }
        }

    def run(self, message, seed):
        raise RuntimeError(message)


class HarnessProgress:
    """Counts ``steps`` with a ProgressBar, sleeping ``delay`` s per step; checks the interrupt flag."""

    CATEGORY = "harness"
    FUNCTION = "run"
    RETURN_TYPES = ("INT",)
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "steps": ("INT", {"default": 3, "min": 1, "max": 100000}),
                "delay": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0, "step": 0.01}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1}),
            }
        }

    def run(self, steps, delay, seed):
        pbar = comfy.utils.ProgressBar(steps)
        for _ in range(steps):
            comfy.model_management.throw_exception_if_processing_interrupted()
            if delay:
                time.sleep(delay)
            pbar.update(1)
        return {"ui": {"steps": [steps]}, "result": (steps,)}


NODE_CLASS_MAPPINGS = {"HarnessRaise": HarnessRaise, "HarnessProgress": HarnessProgress}
NODE_DISPLAY_NAME_MAPPINGS = {"HarnessRaise": "Harness: raise", "HarnessProgress": "Harness: progress"}
