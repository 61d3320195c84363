"""(Re)writes the shipped workflows: the API graphs authored here, their UI-format twins (what File ->
Save writes) and the template browser's thumbnails.

    python -m workflows.build_workflows                      # starts ComfyUI (test fixture) for /object_info
    python -m workflows.build_workflows --server 127.0.0.1:8188   # or asks a running ComfyUI
    python -m workflows.build_workflows --check              # exit 1 when a file on disk is out of date
    COMFYUI_PATH=.hosts/0.3.75 .hosts/0.3.75-venv/bin/python -m workflows.build_workflows --set legacy

Two sets of the same seven graphs (:data:`SETS`), each made from the /object_info and for the frontend of
its reference host:

* ``current`` (ComfyUI 0.33.0, frontend 1.49): ``workflows/<name>.json`` (UI format, listed by ComfyUI's
  template browser), ``workflows/<name>.jpg`` (its thumbnail) and ``workflows/api/<name>.api.json`` (API
  format, for ``POST /prompt``). Uses Batch Images (``BatchImagesNode``, one node for any number of
  images) and Stitch Images, so it needs a release that has them (0.16.4 and 0.33.0 of the test matrix).
* ``legacy`` (ComfyUI 0.3.75, frontend 1.32): ``workflows/legacy/<name>.json`` and
  ``workflows/legacy/api/<name>.api.json``, for hosts without those nodes (0.3.75, Dec 2024): only nodes
  every host of the matrix has (chained ``ImageBatch``; the bias sweep saves its images as one batch).

The API twins live in a subfolder because the host lists every ``*.json`` directly in ``workflows/`` as a
template, and an API-format file is not loadable from there.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from harness.graph import Graph, Node
from harness.perfusion_graphs import ConceptUse, add_concept
from perfusion_core.defaults import (
    COVARIANCE_PROMPTS,
    INFERENCE_BIAS,
    INFERENCE_TEMPERATURE,
    TRAIN_BIAS,
    TRAIN_TEMPERATURE,
)
from workflows.thumbnails import render
from workflows.ui_format import (
    CURRENT_FRONTEND,
    LEGACY_FRONTEND,
    Frontend,
    Note,
    UiNode,
    Workflow,
    api_twin,
    node_specs,
    to_ui,
)

REPO = Path(__file__).resolve().parents[1]

FOLDER = Path(__file__).resolve().parent
CKPT = "v1-5-pruned-emaonly.safetensors"
SDXL_CKPT = "sd_xl_base_1.0.safetensors"
SEED = 42
STEPS, CFG, SAMPLER, SCHEDULER = 25, 7.0, "dpmpp_2m", "karras"
SIZE = 512
SDXL_SIZE = 1024
NEGATIVE = "blurry, low quality, deformed"
SWEEP_BIASES = (0.4, 0.5, 0.6, 0.7, 0.8)
TRAIN_IMAGES = ("hugsy_1.png", "hugsy_2.png", "hugsy_3.png", "hugsy_4.png")


@dataclass(frozen=True)
class WorkflowSet:
    """One set of the shipped workflows: where it lives, which nodes it may use, which host made it."""

    name: str
    folder: Path  # <folder>/<name>.json (UI) and <folder>/api/<name>.api.json
    frontend: Frontend  # how the reference host's frontend saves a graph
    legacy_nodes: bool  # chained ImageBatch (every host) instead of BatchImagesNode / ImageStitch
    reference_host: str  # the ComfyUI release whose /object_info the files are made from
    thumbnails: bool  # <folder>/<name>.jpg for the template browser (which lists only workflows/*.json)

    @property
    def api_folder(self) -> Path:
        return self.folder / "api"


CURRENT = WorkflowSet("current", FOLDER, CURRENT_FRONTEND, False, "0.33.0", True)
LEGACY = WorkflowSet("legacy", FOLDER / "legacy", LEGACY_FRONTEND, True, "0.3.75", False)
SETS = {s.name: s for s in (CURRENT, LEGACY)}


SAMPLER_SETTINGS = {"seed": SEED, "steps": STEPS, "cfg": CFG, "sampler_name": SAMPLER, "scheduler": SCHEDULER}


class Builder(Graph):
    """A shipped workflow being authored: its API graph, and what the UI format adds to it (node
    titles, groups, columns, notes)."""

    def __init__(
        self, name: str, title: str, description: str, legacy: bool, ckpt: str = CKPT, size: int = SIZE
    ):
        super().__init__()
        self.name, self.title, self.description = name, title, description
        self.legacy, self.ckpt, self.size = legacy, ckpt, size
        self.ui: dict[str, UiNode] = {}
        self.notes: list[Note] = []
        self._place: dict[str, Any] = {}

    def add(self, class_type: str, /, **inputs: Any) -> Node:
        node = super().add(class_type, **inputs)
        if self._place:
            self.ui[node.id] = UiNode(**self._place)
        return node

    @contextmanager
    def place(self, group: str | None = None, column: int | None = None) -> Iterator[None]:
        """Nodes added inside go in ``group`` (a frame) and ``column`` (None: right of their inputs)."""
        outer = self._place
        self._place = {k: v for k, v in (("group", group), ("column", column)) if v is not None}
        try:
            yield
        finally:
            self._place = outer

    def titled(self, node: Node, title: str) -> Node:
        self.ui.setdefault(node.id, UiNode()).title = title
        return node

    def note(self, text: str) -> None:
        self.notes.append(Note(text))

    def workflow(self) -> Workflow:
        return Workflow(self.name, self.title, self.description, dict(self), self.ui, self.notes)

    def checkpoint(self, ckpt_name: str | None = None) -> Node:
        return super().checkpoint(ckpt_name or self.ckpt)

    def loader(
        self, model: list, clip: list, concept: str, bias: float = INFERENCE_BIAS, key_lock: str = "local"
    ) -> Node:
        return add_concept(self, model, clip, ConceptUse(concept, bias, key_lock=key_lock))

    def generation(
        self, model: list, positive: Node, negative: Node, vae: list, latent: Node | None = None
    ) -> Node:
        """KSampler at the shipped settings -> VAEDecode, on a new empty latent unless given one."""
        latent = latent if latent is not None else self.latent(self.size)
        return self.sample(model, positive, negative, latent, vae, **SAMPLER_SETTINGS)

    def images(self, images: list[Node]) -> Node | list:
        """One IMAGE batch: Batch Images, or on the legacy set a chain of ImageBatch."""
        return self.batch(images, one_node=not self.legacy)


def generate(
    legacy: bool = False, builder: Builder | None = None, concept_file: str = "hugsy.safetensors"
) -> Workflow:
    b = (
        builder
        if builder is not None
        else Builder(
            "perfusion_generate",
            "Perfusion: one concept",
            "Load a trained concept and write its word in the prompt.",
            legacy,
        )
    )
    ckpt = b.checkpoint()
    concept = b.loader(ckpt[0], ckpt[1], concept_file)
    pos = b.encode(concept[1], "a photo of hugsy sitting on a wooden bench in a park, golden hour")
    neg = b.encode(concept[1], NEGATIVE)
    b.save(b.generation(concept[0], pos, neg, ckpt[2]), "perfusion/hugsy")
    b.note(
        f"{concept_file}: a concept trained with the word 'hugsy' (superclass 'teddy'). Use the word in "
        "the prompt; encode it with the loader's CLIP.\n\nbias: lower = closer to the training images, "
        "higher = follows the rest of the prompt more (0.6-0.75 with key_lock local)."
    )
    return b.workflow()


def two_concepts(legacy: bool = False) -> Workflow:
    b = Builder(
        "perfusion_two_concepts",
        "Perfusion: two concepts",
        "Two concepts trained apart, combined at inference in one image.",
        legacy,
    )
    ckpt = b.checkpoint()
    first = b.loader(ckpt[0], ckpt[1], "hugsy.safetensors")
    second = b.loader(first[0], first[1], "zorbo.safetensors")
    pos = b.encode(second[1], "a photo of a hugsy sailing in a zorbo on a calm lake, sunny day")
    neg = b.encode(second[1], NEGATIVE)
    b.save(b.generation(second[0], pos, neg, ckpt[2]), "perfusion/hugsy_zorbo")
    b.note(
        "Words: 'hugsy' = a teddy bear (hugsy.safetensors, superclass 'teddy'); 'zorbo' = a teapot "
        "(zorbo.safetensors, superclass 'teapot'). Each was trained on its own; chained loaders apply both "
        "jointly. Encode the prompt with the CLIP of the LAST loader (it knows both words)."
    )
    return b.workflow()


def bias_sweep(legacy: bool = False) -> Workflow:
    b = Builder(
        "perfusion_bias_sweep",
        "Perfusion: bias sweep",
        "One concept at five gate biases, saved as one batch of five images."
        if legacy
        else "One concept at five gate biases, stitched left to right into one grid image.",
        legacy,
    )
    ckpt = b.checkpoint()
    with b.place(column=2):
        neg = b.encode(ckpt[1], NEGATIVE)
        latent = b.latent(b.size)
    images = []
    for bias in SWEEP_BIASES:
        concept = b.titled(b.loader(ckpt[0], ckpt[1], "hugsy.safetensors", bias), f"bias {bias:.2f}")
        pos = b.encode(concept[1], "a watercolor painting of hugsy reading a book in a library")
        images.append(b.generation(concept[0], pos, neg, ckpt[2], latent))
    with b.place(column=6):
        if b.legacy:  # ImageStitch is not in every host (Dec 2024 lacks it): one batch, saved image by image
            grid = b.images(images)
        else:
            grid = images[0]
            for image in images[1:]:
                grid = b.add(
                    "ImageStitch",
                    image1=grid,
                    direction="right",
                    match_image_size=True,
                    spacing_width=8,
                    spacing_color="white",
                    image2=image,
                )
    with b.place(column=7):
        b.save(grid, "perfusion/bias_sweep")
    b.note(
        "Fidelity vs. text alignment: the same seed at bias "
        + ", ".join(f"{x:.1f}" for x in SWEEP_BIASES)
        + (" (the saved images, in order)" if b.legacy else " (left to right)")
        + ". Lower bias = closer to the training images; higher = more of the prompt's "
        "style and context. The negative prompt has no concept word, so the plain CLIP encodes it."
    )
    return b.workflow()


def train_and_generate(
    legacy: bool = False, builder: Builder | None = None, save_name: str = "hugsy", **settings: Any
) -> Workflow:
    b = (
        builder
        if builder is not None
        else Builder(
            "perfusion_train_and_generate",
            "Perfusion: train and generate",
            "Train a concept from a few photos, save it (~40 KB) and use it in the same graph.",
            legacy,
        )
    )
    settings = {"batch_size": 4, "grad_accumulation": 4, "gradient_checkpointing": False, **settings}
    train, gen = "Train the concept", "Generate with it"
    with b.place(train, 0):
        loads = [b.add("LoadImage", image=name) for name in TRAIN_IMAGES]
    with b.place(train, 1):
        batch = b.images(loads)
        ckpt = b.checkpoint()
    with b.place(train, 2):
        trainer = b.add(
            "PerfusionTrainConcept",
            model=ckpt[0],
            clip=ckpt[1],
            vae=ckpt[2],
            images=batch,
            concept_word="hugsy",
            superclass="teddy",
            steps=400,
            batch_size=settings["batch_size"],
            grad_accumulation=settings["grad_accumulation"],
            lr_v=0.03,
            lr_embedding=0.006,
            train_bias=TRAIN_BIAS,
            train_temperature=TRAIN_TEMPERATURE,
            resolution=b.size,
            flip=True,
            seed=0,
            templates="a photo of a {}\na rendering of a {}\na close-up photo of the {}\na good photo of a {}",
            gradient_checkpointing=settings["gradient_checkpointing"],
            save_every=0,
            checkpoint_name="",
            precision="auto",
            covariance_prompts=COVARIANCE_PROMPTS,
            preview_every=100,
            validation_prompts="a photo of {}\n{} on the beach",
            preview_size=b.size,
            preview_steps=15,
            key_lock=True,
            weight_decay=0.0,
        )
    with b.place(train, 3):
        b.add("PerfusionSaveConcept", concept=trainer, name=save_name, overwrite=False)
        b.titled(b.preview(trainer[1]), "Loss curve")
        b.titled(b.preview(trainer[3]), "Previews")
    with b.place(gen, 4):
        concept = b.add(
            "PerfusionApplyConcept",
            model=ckpt[0],
            clip=ckpt[1],
            concept=trainer,
            bias=INFERENCE_BIAS,
            temperature=INFERENCE_TEMPERATURE,
            key_lock="local",
            bias_mode="widget",
            bias_schedule="constant",
            bias_end=INFERENCE_BIAS,
        )
    with b.place(gen):
        pos = b.encode(concept[1], "a photo of hugsy on the beach")
        neg = b.encode(concept[1], NEGATIVE)
    with b.place(gen, 5):
        latent = b.latent(b.size)
    with b.place(gen):
        b.save(b.generation(concept[0], pos, neg, ckpt[2], latent), f"perfusion/{save_name}_trained")
    more = (
        "add more with Batch Images"
        if b.legacy
        else "link more into Batch Images, or train from a folder: Load Image (from Folder) into 'images'"
    )
    b.note(
        "Put 3-10 photos of your object in ComfyUI's input folder and pick them in the Load Image nodes "
        f"({more}). Training runs on ComfyUI's device with a progress bar; Cancel stops "
        f"it. The concept is saved as models/perfusion/{save_name}.safetensors (set overwrite to replace it) and "
        "used right away by Apply Perfusion Concept.\n\nPreviews: the validation prompts are sampled at step "
        f"0 and every 100 steps (preview_every; 0 = off) as generation will show the concept (bias {INFERENCE_BIAS:.2f}), one "
        "fixed seed per prompt; they show on the training node while it runs and in 'Previews' "
        "after. Training again with steps = N and the same seed gives the concept of the step-N preview."
    )
    return b.workflow()


def global_key_lock(legacy: bool = False) -> Workflow:
    b = Builder(
        "perfusion_global_key_lock",
        "Perfusion: global key-lock",
        "Global key-locking for better text alignment in complex prompts.",
        legacy,
    )
    ckpt = b.checkpoint()
    concept = b.loader(ckpt[0], ckpt[1], "hugsy.safetensors", 0.5, key_lock="global")
    pos = b.encode(concept[1], "an oil painting of hugsy wearing a red scarf, in the style of van gogh")
    neg = b.encode(concept[1], NEGATIVE)
    b.save(b.generation(concept[0], pos, neg, ckpt[2]), "perfusion/hugsy_global")
    b.note(
        "key_lock = global: every cross-attention key comes from the prompt with 'hugsy' replaced by its "
        "superclass. Encode BOTH prompts with the loader's CLIP. Typical bias 0.4-0.6 (lower than local)."
    )
    return b.workflow()


def sdxl_builder(name: str, title: str, description: str, legacy: bool) -> Builder:
    return Builder(name, title, description, legacy, ckpt=SDXL_CKPT, size=SDXL_SIZE)


def sdxl_generate(legacy: bool = False) -> Workflow:
    """The one-concept graph on SDXL base: the same nodes, an SDXL concept file, 1024 px."""
    b = sdxl_builder(
        "perfusion_sdxl_generate",
        "Perfusion SDXL: one concept",
        "Load a concept trained on SDXL and write its word in the prompt (1024 px).",
        legacy,
    )
    return generate(legacy, b, "hugsy_sdxl.safetensors")


def sdxl_train_and_generate(legacy: bool = False) -> Workflow:
    """Training on SDXL base at 1024 px: batch 1 x 16 with gradient checkpointing fits a 24 GB GPU's
    budget for SDXL fine-tuning (a setting to check on the GPU, not measured here)."""
    b = sdxl_builder(
        "perfusion_sdxl_train_and_generate",
        "Perfusion SDXL: train and generate",
        "Train an SDXL concept from a few photos, save it (~210 KB) and use it in the same graph.",
        legacy,
    )
    return train_and_generate(
        legacy, b, "hugsy_sdxl", batch_size=1, grad_accumulation=16, gradient_checkpointing=True
    )


WORKFLOWS = (
    generate,
    two_concepts,
    bias_sweep,
    train_and_generate,
    global_key_lock,
    sdxl_generate,
    sdxl_train_and_generate,
)
NAMES = tuple(make().name for make in WORKFLOWS)


def workflow(name: str, wset: WorkflowSet = CURRENT) -> Workflow:
    """The authored graph of one shipped workflow of ``wset`` (a fresh copy)."""
    for make in WORKFLOWS:
        wf = make(wset.legacy_nodes)
        if wf.name == name:
            return wf
    raise KeyError(f"no workflow named {name!r}; the shipped ones are {', '.join(NAMES)}")


def build(object_info: Mapping, wset: WorkflowSet = CURRENT) -> dict[str, tuple[Workflow, dict, dict]]:
    """name -> (workflow, UI JSON, API JSON) for every workflow of ``wset``."""
    out = {}
    for make in WORKFLOWS:
        wf = make(wset.legacy_nodes)
        specs = node_specs(object_info, wf.prompt)
        out[wf.name] = (wf, to_ui(wf, specs, wset.frontend), api_twin(wf, specs))
    return out


def js_numbers(data: Any) -> Any:
    """Integral floats as ints (7.0 -> 7), as the frontend's JSON.stringify writes them."""
    if isinstance(data, float) and data.is_integer():
        return int(data)
    if isinstance(data, dict):
        return {k: js_numbers(v) for k, v in data.items()}
    if isinstance(data, list):
        return [js_numbers(v) for v in data]
    return data


def dump(data: Any) -> str:
    return json.dumps(js_numbers(data), indent=2, ensure_ascii=False) + "\n"


def files_for(
    built: Mapping[str, tuple[Workflow, dict, dict]], wset: WorkflowSet = CURRENT
) -> dict[Path, str]:
    files = {}
    for name, (_, ui, api) in built.items():
        files[wset.folder / f"{name}.json"] = dump(ui)
        files[wset.api_folder / f"{name}.api.json"] = dump(api)
    return files


def stale_files(object_info: Mapping, wset: WorkflowSet = CURRENT) -> list[Path]:
    """The JSON files of ``wset`` on disk that differ from what this script would write."""
    return [
        p
        for p, text in files_for(build(object_info, wset), wset).items()
        if not p.is_file() or p.read_text() != text
    ]


def write_all(object_info: Mapping, wset: WorkflowSet = CURRENT) -> list[Path]:
    built = build(object_info, wset)
    wset.api_folder.mkdir(parents=True, exist_ok=True)
    written = []
    for path, text in files_for(built, wset).items():
        path.write_text(text)
        written.append(path)
    if wset.thumbnails:
        for name, (wf, ui, _) in built.items():
            path = wset.folder / f"{name}.jpg"
            render(ui, wf.title, wf.description).save(path, quality=90)
            written.append(path)
    return written


def fetch_host(server: str | None) -> tuple[dict, str]:
    """(/object_info, the ComfyUI version /system_stats reports, or "unknown")."""
    if server:
        url = server if server.startswith("http") else f"http://{server}"
        return requests.get(f"{url}/object_info", timeout=60).json(), host_version(url)
    from harness.server import ComfyServer

    with (
        tempfile.TemporaryDirectory(prefix="build-workflows-") as tmp,
        ComfyServer(tmp, load_pack=True) as srv,
    ):
        return srv.object_info(), host_version(srv.url)


def host_version(url: str) -> str:
    stats = requests.get(f"{url}/system_stats", timeout=60).json()
    return str(stats.get("system", {}).get("comfyui_version") or "unknown")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", help="host:port of a running ComfyUI with this pack (default: start one)")
    parser.add_argument(
        "--set", choices=sorted(SETS), default=CURRENT.name, help="which set (default: current)"
    )
    parser.add_argument("--check", action="store_true", help="only report files that are out of date")
    parser.add_argument(
        "--any-host", action="store_true", help="build from a host other than the set's reference host"
    )
    args = parser.parse_args(argv)
    wset = SETS[args.set]
    object_info, version = fetch_host(args.server)
    if version != wset.reference_host and not args.any_host:
        print(
            f"the {wset.name} set is made from ComfyUI {wset.reference_host}; this host is {version} "
            "(set COMFYUI_PATH and use that host's python, or pass --any-host)",
            file=sys.stderr,
        )
        return 2
    if args.check:
        stale = stale_files(object_info, wset)
        for path in stale:
            print(f"out of date: {path.relative_to(REPO)}")
        return 1 if stale else 0
    for path in write_all(object_info, wset):
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
