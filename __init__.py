"""comfyui-perfusion: Perfusion (key-locked rank-one editing) concepts for ComfyUI."""

import sys

if "folder_paths" in sys.modules:  # imported by a running ComfyUI: register the nodes
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:  # imported outside ComfyUI (pytest collects the repo root as a package): nothing to register
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
