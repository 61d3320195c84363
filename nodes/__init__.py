"""ComfyUI nodes of the pack (V1 node API, so it loads on every recent release)."""

from . import folders
from .nodes_loader import PerfusionApplyConcept, PerfusionConceptLoader

folders.register()

NODE_CLASS_MAPPINGS = {
    "PerfusionConceptLoader": PerfusionConceptLoader,
    "PerfusionApplyConcept": PerfusionApplyConcept,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "PerfusionConceptLoader": "Load Perfusion Concept",
    "PerfusionApplyConcept": "Apply Perfusion Concept",
}
