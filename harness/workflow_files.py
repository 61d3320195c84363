"""The shipped workflows (``workflows/``) pointed at the test fixture.

The workflows name real files (``v1-5-pruned-emaonly.safetensors``, ``sd_xl_base_1.0.safetensors``,
``hugsy.safetensors``, photos) and real sizes (512/1024 px, 25 steps, 400 training steps); tests run
them on the fixture checkpoint of the same family (tiny SD15, SDXL) with fixture concepts and toy
images at 64 px and a few steps. Only those values change; the graph stays the shipped one.

Two sets ship (``workflows/build_workflows.py``): ``current`` (``workflows/``, needs Batch Images and
Stitch Images: 0.16.4 and 0.33.0 of the matrix) and ``legacy`` (``workflows/legacy/``, nodes every
supported host has).
:func:`workflow_set_for` names the one a host can run.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from itertools import cycle
from pathlib import Path
from typing import Any

from harness.graph import Graph
from harness.paths import repo_root

__all__ = [
    "SET_NAMES",
    "FixtureValues",
    "api_workflow",
    "for_fixture",
    "missing_classes",
    "train_fixture_concepts",
    "ui_workflow",
    "workflow_set_for",
    "workflows_dir",
]

# word -> (superclass, toy image colour), trained through the shipped train-and-generate workflow
FIXTURE_CONCEPTS = {"hugsy": ("teddy", (160, 100, 50)), "zorbo": ("cat", (40, 120, 200))}
SDXL_WORKFLOW_CKPT = "sd_xl_base_1.0.safetensors"
SET_NAMES = ("current", "legacy")  # the sets of build_workflows.SETS, newest first


def workflows_dir(wset: str = "current") -> Path:
    """``workflows/`` (the current set) or ``workflows/legacy/``."""
    if wset not in SET_NAMES:
        raise ValueError(f"no workflow set {wset!r}; the sets are {SET_NAMES}")
    root = repo_root() / "workflows"
    return root if wset == "current" else root / wset


def api_workflow(name: str, wset: str = "current") -> Graph:
    """``<set folder>/api/<name>.api.json``, as a :class:`Graph` (find its nodes by class)."""
    return Graph(json.loads((workflows_dir(wset) / "api" / f"{name}.api.json").read_text()))


def ui_workflow(name: str, wset: str = "current") -> dict:
    """``<set folder>/<name>.json`` (UI format)."""
    return json.loads((workflows_dir(wset) / f"{name}.json").read_text())


def missing_classes(object_info: Mapping, wset: str) -> list[str]:
    """The node classes the API workflows of ``wset`` use that this host's /object_info lacks."""
    used = {
        node["class_type"]
        for path in (workflows_dir(wset) / "api").glob("*.api.json")
        for node in json.loads(path.read_text()).values()
    }
    return sorted(used - set(object_info))


def workflow_set_for(object_info: Mapping) -> str:
    """The newest set whose every node class this host has: the one its users should open."""
    for wset in SET_NAMES:
        if not missing_classes(object_info, wset):
            return wset
    missing = missing_classes(object_info, SET_NAMES[-1])
    raise LookupError(f"no workflow set runs on this host ({SET_NAMES[-1]} lacks {missing})")


class FixtureValues:
    """What :func:`for_fixture` writes into a workflow."""

    def __init__(
        self,
        ckpt_name: str,
        *,
        concepts: Mapping[str, str] | None = None,
        images: Sequence[str] = (),
        size: int = 64,
        steps: int = 2,
        train_steps: int = 4,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        sdxl_ckpt_name: str | None = None,
    ):
        """``ckpt_name`` replaces the SD1.5 checkpoint, ``sdxl_ckpt_name`` the SDXL one; ``concepts``:
        shipped concept file -> fixture file (unlisted names stay); ``images``: toy image names, used in
        turn by the LoadImage nodes; ``overrides``: class_type -> {input: value} applied last to every
        node of that class."""
        self.ckpt_name = ckpt_name
        self.sdxl_ckpt_name = sdxl_ckpt_name
        self.concepts = dict(concepts or {})
        self.images = list(images)
        self.size = size
        self.steps = steps
        self.train_steps = train_steps
        self.overrides = {k: dict(v) for k, v in (overrides or {}).items()}

    def node_values(self, class_type: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        sdxl = inputs.get("ckpt_name") == SDXL_WORKFLOW_CKPT
        if sdxl and self.sdxl_ckpt_name is None:
            raise ValueError("an SDXL workflow needs sdxl_ckpt_name")
        fixed = {
            "CheckpointLoaderSimple": {"ckpt_name": self.sdxl_ckpt_name if sdxl else self.ckpt_name},
            "EmptyLatentImage": {"width": self.size, "height": self.size},
            "KSampler": {"steps": self.steps},
            "PerfusionTrainConcept": {
                "steps": self.train_steps,
                "resolution": self.size,
                "batch_size": 1,
                "grad_accumulation": 1,
                "covariance_prompts": 64,  # the node's minimum: bigG encodes each prompt in ~1 s on a CPU
                "preview_size": self.size,
                "preview_steps": self.steps,
            },
        }.get(class_type, {})
        return {**fixed, **self.overrides.get(class_type, {})}


def for_fixture(prompt: Mapping[str, Mapping], values: FixtureValues) -> Graph:
    """A copy of an API prompt with the fixture's files, sizes and step counts, as a :class:`Graph`."""
    out = Graph(copy.deepcopy(dict(prompt)))
    for node_id, node in out.items():
        inputs = node["inputs"]
        for name, value in values.node_values(node["class_type"], inputs).items():
            if name not in inputs:
                raise KeyError(f"node {node_id} ({node['class_type']}) has no input {name!r} to override")
            inputs[name] = value
    for loader in out.nodes("PerfusionConceptLoader"):
        inputs = out.inputs(loader)
        inputs["concept_name"] = values.concepts.get(inputs["concept_name"], inputs["concept_name"])
    loads = out.nodes("LoadImage")
    if loads and not values.images:
        raise ValueError(f"node {loads[0].id} (LoadImage) needs an image: pass images=[...]")
    for load, image in zip(loads, cycle(values.images)):
        out.inputs(load)["image"] = image
    return out


def train_fixture_concepts(
    server, ckpt_name: str, steps: int = 8, timeout: float = 900.0, sdxl_ckpt_name: str | None = None
) -> dict[str, str]:
    """hugsy.safetensors and zorbo.safetensors in the server's models/perfusion, trained by the shipped
    train-and-generate workflow over HTTP (skipped for files already there): word -> file name. With
    ``sdxl_ckpt_name`` also hugsy_sdxl.safetensors (what the SDXL workflows load), by the SDXL one. The
    workflows are those of the set the server's host runs (:func:`workflow_set_for`)."""
    from harness.sample_images import write_toy_images

    wset = workflow_set_for(server.object_info())

    trained = {}
    jobs = [(word, word, "perfusion_train_and_generate") for word in FIXTURE_CONCEPTS]
    if sdxl_ckpt_name is not None:
        jobs.append(("hugsy", "hugsy_sdxl", "perfusion_sdxl_train_and_generate"))
    for word, name, workflow in jobs:
        superclass, colour = FIXTURE_CONCEPTS[word]
        trained[name] = f"{name}.safetensors"
        images = write_toy_images(server.layout.input, word, 3, colour=colour)
        if (server.layout.perfusion / trained[name]).is_file():
            continue
        values = FixtureValues(
            ckpt_name,
            sdxl_ckpt_name=sdxl_ckpt_name,
            images=images,
            train_steps=steps,
            overrides={
                "PerfusionTrainConcept": {
                    "concept_word": word,
                    "superclass": superclass,
                    "lr_v": 0.3,
                    "lr_embedding": 0.02,
                },
                "PerfusionSaveConcept": {"name": name, "overwrite": True},
            },
        )
        server.run(for_fixture(api_workflow(workflow, wset), values), timeout, check=True)
    return trained
