"""ComfyUI nodes of the pack (V1 node API, so it loads on every recent release)."""

from . import folders
from .nodes_loader import PerfusionApplyConcept, PerfusionConceptLoader
from .nodes_train import PerfusionSaveConcept, PerfusionTrainConcept

folders.register()

NODE_CLASS_MAPPINGS = {
    "PerfusionConceptLoader": PerfusionConceptLoader,
    "PerfusionApplyConcept": PerfusionApplyConcept,
    "PerfusionTrainConcept": PerfusionTrainConcept,
    "PerfusionSaveConcept": PerfusionSaveConcept,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "PerfusionConceptLoader": "Load Perfusion Concept",
    "PerfusionApplyConcept": "Apply Perfusion Concept",
    "PerfusionTrainConcept": "Train Perfusion Concept",
    "PerfusionSaveConcept": "Save Perfusion Concept",
}
