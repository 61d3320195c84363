"""A stand-in for PyAV (``av``), for the lent GPU machine only: NOT the real package.

ComfyUI 0.33 imports ``av`` at start-up, through ``comfy_api`` (``comfy_api/latest/_input_impl/
video_types.py`` reads ``av.container.InputContainer``, ``av.subtitles.stream.SubtitleStream`` and
the colour enums of ``av.video.reformatter`` when it is imported; ``comfy_extras`` nodes import
``av.codec.CodecContext``). The lent machine has no PyAV, and its wheel (35 MB, FFmpeg inside) does
not fit in the 64 MiB a device call carries. The device kit decodes and encodes no video or audio, so
this module only makes those imports succeed: every name is a placeholder class, its attributes are
distinct constants (so module-level tables keyed by them build), and creating or calling one raises
an error that says PyAV is missing.

Only ``scripts/device_check.sh run`` (on the device) and ``benchmarks.gpu_check --simulate-device``
(its CPU rehearsal) put ``scripts/device/stubs`` on ``PYTHONPATH``; no install of the pack uses it.
"""

from __future__ import annotations

import sys
import types

__version__ = "0.0.0+perfusion-device-kit-stand-in"
MESSAGE = "PyAV is not installed here: this is the device kit's stand-in for 'av' (no video or audio I/O)"


class _Constants(type):
    """Class attributes that are not defined become named constants (``ColorTrc.BT709``)."""

    def __getattr__(cls, name: str) -> str:
        if name.startswith("__"):
            raise AttributeError(name)
        value = f"av.{cls.__name__}.{name}"
        setattr(cls, name, value)
        return value


class Unavailable(metaclass=_Constants):
    """Any PyAV class or function: importable, usable in annotations and isinstance(), never run."""

    def __init__(self, *args, **kwargs) -> None:
        raise RuntimeError(MESSAGE)


def _placeholder(module: types.ModuleType, name: str) -> type:
    if name.startswith("__"):
        raise AttributeError(name)
    cls = _Constants(name, (Unavailable,), {"__module__": module.__name__})
    setattr(module, name, cls)
    return cls


def _module(name: str) -> types.ModuleType:
    module = types.ModuleType(name, f"Stand-in for {name} (see the av package's docstring).")
    module.__getattr__ = lambda attr: _placeholder(module, attr)  # PEP 562
    module.__path__ = []  # a package, so its submodules below resolve from sys.modules
    sys.modules[name] = module
    return module


def __getattr__(name: str) -> type:  # av.open, av.VideoStream, av.AudioFrame...
    return _placeholder(sys.modules[__name__], name)


# The submodules ComfyUI 0.33 imports names from, as attributes of their parents too.
for _name in ("codec", "container", "subtitles", "subtitles.stream", "video", "video.reformatter"):
    _parent, _, _leaf = f"{__name__}.{_name}".rpartition(".")
    setattr(sys.modules[_parent], _leaf, _module(f"{__name__}.{_name}"))
