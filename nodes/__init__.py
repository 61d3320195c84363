"""ComfyUI nodes of the pack (V1 node API, so it loads on every recent release)."""

from . import folders
from .nodes_choose_bias import PerfusionChooseBias
from .nodes_export import PerfusionExportConcept
from .nodes_gate_map import PerfusionGateMap
from .nodes_loader import PerfusionApplyConcept, PerfusionConceptFile, PerfusionConceptLoader
from .nodes_train import PerfusionSaveConcept, PerfusionTrainConcept

folders.register()

NODE_CLASS_MAPPINGS = {
    "PerfusionConceptLoader": PerfusionConceptLoader,
    "PerfusionApplyConcept": PerfusionApplyConcept,
    "PerfusionConceptFile": PerfusionConceptFile,
    "PerfusionTrainConcept": PerfusionTrainConcept,
    "PerfusionSaveConcept": PerfusionSaveConcept,
    "PerfusionExportConcept": PerfusionExportConcept,
    "PerfusionGateMap": PerfusionGateMap,
    "PerfusionChooseBias": PerfusionChooseBias,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "PerfusionConceptLoader": "Load Perfusion Concept",
    "PerfusionApplyConcept": "Apply Perfusion Concept",
    "PerfusionConceptFile": "Load Perfusion Concept File",
    "PerfusionTrainConcept": "Train Perfusion Concept",
    "PerfusionSaveConcept": "Save Perfusion Concept",
    "PerfusionExportConcept": "Export Perfusion Concept (LoRA + Embedding)",
    "PerfusionGateMap": "Perfusion Gate Map",
    "PerfusionChooseBias": "Choose Perfusion Bias",
}
