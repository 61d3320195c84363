"""What the pack needs of the running ComfyUI, probed once when the pack loads.

The pack must load on any host, so a missing surface is recorded here, never raised at import; each
node calls :func:`require_host` first and a graph then fails with one message naming the ComfyUI
version and what it lacks, instead of a traceback per prompt from deep inside the tokenizer or the
model patcher.
"""

from __future__ import annotations

import inspect
import sys


class HostIncompatibleError(RuntimeError):
    """The running ComfyUI lacks something the pack hooks."""


def comfyui_version() -> str:
    """The host's version as it reports it (`comfyui_version.py`, there since early 2025)."""
    try:
        from comfyui_version import __version__
    except ImportError:
        return "(a release without comfyui_version.py, from before 2025)"
    return str(__version__)


# (module, attribute path, what the pack uses it for)
_SURFACES = (
    ("comfy.sd1_clip", "SDTokenizer.tokenize_with_weights", "tokenizing prompts with concept words"),
    ("comfy.model_patcher", "ModelPatcher.add_object_patch", "patching the K/V projections"),
    ("comfy.model_patcher", "ModelPatcher.get_model_object", "reading patched modules"),
    ("comfy.model_patcher", "ModelPatcher.add_wrapper_with_key", "marking sampling runs"),
    ("comfy.model_patcher", "ModelPatcher.set_model_attn2_patch", "global key-locking"),
    ("comfy.patcher_extension", "WrappersMP.OUTER_SAMPLE", "marking sampling runs"),
    ("comfy.patcher_extension", "WrappersMP.DIFFUSION_MODEL", "training through the UNet"),
    ("comfy.model_management", "load_models_gpu", "loading models for training"),
)


def _missing(module_name: str, path: str) -> bool:
    """Whether the host module (which the host imported before any custom node) lacks `path`."""
    obj = sys.modules.get(module_name)
    if obj is None:
        return True
    for part in path.split("."):
        if not hasattr(obj, part):
            return True
        obj = getattr(obj, part)
    return False


def probe() -> list[str]:
    """What this host lacks, as `module.attribute (use)` lines; empty when the pack can run."""
    problems = [f"{m}.{p} ({use})" for m, p, use in _SURFACES if _missing(m, p)]
    if not _missing("comfy.sd1_clip", "SDTokenizer.tokenize_with_weights"):
        from comfy.sd1_clip import SDTokenizer

        if "return_word_ids" not in inspect.signature(SDTokenizer.tokenize_with_weights).parameters:
            problems.append(
                "the return_word_ids argument of SDTokenizer.tokenize_with_weights (concept words)"
            )
    return problems


PROBLEMS: list[str] = probe()


def incompatible(what: str) -> HostIncompatibleError:
    """The error for a host that lacks `what`, naming its version."""
    return HostIncompatibleError(
        f"comfyui-perfusion cannot run on ComfyUI {comfyui_version()}: it lacks {what}. "
        "Update ComfyUI, or install the pack release made for yours"
    )


def require_host() -> None:
    """Raise the one clear error when the host lacks what the pack hooks (see module docstring)."""
    if PROBLEMS:
        raise incompatible("; ".join(PROBLEMS))
