"""The shipped workflows over ComfyUI's real HTTP API (main.py): node definitions, the template
browser's routes, every API workflow run to an image, a long mixed queue that must match the same
prompts run alone, and the user-facing bias-sweep script.

Concepts are trained by the shipped train-and-generate workflow through the same server, so the
fixture files carry the names the workflows use (hugsy.safetensors, zorbo.safetensors).

The workflow sets per host (current: hosts with Batch Images, legacy: every host) are checked on every
host of the matrix by the one ``hosts`` test here, :func:`test_workflow_sets_run_on_this_host`.
"""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
import requests

from harness.graph import Graph, Node
from harness.images import load_image
from harness.paths import repo_root
from harness.workflow_files import (
    FIXTURE_CONCEPTS,
    SET_NAMES,
    FixtureValues,
    api_workflow,
    for_fixture,
    missing_classes,
    train_fixture_concepts,
    ui_workflow,
    workflows_dir,
)
from workflows.build_workflows import NAMES, SETS, host_version, stale_files
from workflows.ui_format import (
    CURRENT_FRONTEND,
    LEGACY_FRONTEND,
    NodeSpec,
    node_specs,
    validate,
    values_dropped_on_load,
)

pytestmark = pytest.mark.slow

PACK = "comfyui-perfusion"
SIZE, STEPS = 64, 2
BATCH = 50
BATCH_NODES = ("BatchImagesNode", "ImageBatch")  # current set, legacy set
STITCH_GAP = 8  # the bias sweep's spacing_width
GATE_RANGES = {"bias": (0.70, -1.0, 2.0), "temperature": (0.15, 0.01, 1.0)}  # documented default, min, max


@pytest.fixture(scope="module")
def server_concepts(comfy_server, tiny_ckpt_name, sdxl_ckpt_name) -> dict[str, str]:
    return train_fixture_concepts(comfy_server, tiny_ckpt_name, sdxl_ckpt_name=sdxl_ckpt_name)


def fixture_prompt(name: str, ckpt: str, **overrides) -> Graph:
    return for_fixture(api_workflow(name), FixtureValues(ckpt, size=SIZE, steps=STEPS, overrides=overrides))


def test_object_info_describes_the_four_nodes(comfy_server, server_concepts):
    info = comfy_server.object_info()
    for node in ("PerfusionConceptLoader", "PerfusionApplyConcept"):
        required = info[node]["input"]["required"]
        for name, (default, low, high) in GATE_RANGES.items():
            kind, options = required[name]
            assert kind == "FLOAT", (node, name)
            assert (options["default"], options["min"], options["max"]) == (default, low, high), (node, name)
        assert required["key_lock"][0] == ["local", "global", "off"]
        assert info[node]["output"] == ["MODEL", "CLIP"]
    assert set(server_concepts.values()) <= set(
        info["PerfusionConceptLoader"]["input"]["required"]["concept_name"][0]
    )
    train = info["PerfusionTrainConcept"]
    assert train["output"] == ["PERFUSION_CONCEPT", "IMAGE", "LOSS_MAP", "IMAGE"]
    assert train["output_name"][3] == "previews"
    assert {"images", "concept_word", "superclass", "steps", "seed", "templates"} <= set(
        train["input"]["required"]
    )
    assert {"mask", "resume", "covariance_prompts", "preview_every", "validation_prompts"} <= set(
        train["input"]["optional"]
    )
    assert train["input"]["optional"]["preview_every"][1]["default"] == 0
    save = info["PerfusionSaveConcept"]
    assert save["output_node"] is True
    assert set(save["input"]["required"]) == {"concept", "name", "overwrite"}


def test_shipped_files_are_current_and_served_to_the_template_browser(comfy_server):
    stale = stale_files(comfy_server.object_info())
    assert not stale, f"run `python -m workflows.build_workflows`: out of date: {stale}"
    listed = requests.get(f"{comfy_server.url}/workflow_templates", timeout=30).json()
    assert sorted(listed.get(PACK, [])) == sorted(NAMES), listed
    for name in NAMES:
        base = f"{comfy_server.url}/api/workflow_templates/{PACK}/{name}"
        served = requests.get(f"{base}.json", timeout=30)
        assert served.status_code == 200, (
            f"{name}.json: HTTP {served.status_code} (is another folder shadowing?)"
        )
        assert served.json() == ui_workflow(name)
        thumb = requests.get(f"{base}.jpg", timeout=30)
        assert thumb.status_code == 200 and thumb.headers["Content-Type"] == "image/jpeg", name
        assert thumb.content == (workflows_dir() / f"{name}.jpg").read_bytes()


@pytest.mark.parametrize("name", NAMES)
def test_api_workflow_runs_over_http(comfy_server, tiny_ckpt_name, sdxl_ckpt_name, server_concepts, name):
    images = [f"{word}_{i}.png" for word in FIXTURE_CONCEPTS for i in range(3)]
    values = FixtureValues(
        tiny_ckpt_name,
        sdxl_ckpt_name=sdxl_ckpt_name,
        images=images,
        size=SIZE,
        steps=STEPS,
        train_steps=2,
        overrides={"PerfusionSaveConcept": {"name": f"http_{name}", "overwrite": True}},
    )
    prompt = for_fixture(api_workflow(name), values)
    result = comfy_server.run(prompt)
    assert result.success, result.error_text

    assert result.events("execution_start") and result.events("execution_success")
    samplers = ids(prompt.nodes("KSampler"))
    progressed = {e["node"] for e in result.events("progress") if e["max"] == STEPS}
    assert samplers <= progressed, "every KSampler reports its steps on the websocket"
    assert {e["node"] for e in result.events("executed")} >= ids(prompt.nodes("SaveImage"))

    check_saved_images(comfy_server, result, prompt, name, "current")
    if name.endswith("train_and_generate"):
        loss_preview = prompt.nodes("PreviewImage")[0]
        assert comfy_server.images(result, loss_preview.id), "the loss curve preview"
        assert (comfy_server.layout.perfusion / f"http_{name}.safetensors").is_file()


def test_train_and_generate_workflow_trains_from_one_photo(comfy_server, tiny_ckpt_name, server_concepts):
    """A new user's first try: one Load Image straight into the trainer, the default batch of 4."""
    values = FixtureValues(
        tiny_ckpt_name,
        images=["hugsy_0.png"],
        size=SIZE,
        steps=STEPS,
        train_steps=2,
        overrides={
            "PerfusionTrainConcept": {"batch_size": 4},
            "PerfusionSaveConcept": {"name": "http_one_photo", "overwrite": True},
        },
    )
    prompt = for_fixture(api_workflow("perfusion_train_and_generate"), values)
    loads = prompt.nodes("LoadImage")
    batches = [node for class_type in BATCH_NODES for node in prompt.nodes(class_type)]
    assert batches, "the shipped graph batches its Load Image nodes"
    for node in batches + loads[1:]:
        del prompt[node.id]
    prompt.inputs("PerfusionTrainConcept")["images"] = loads[0][0]
    result = comfy_server.run(prompt)
    assert result.success, result.error_text
    assert (comfy_server.layout.perfusion / "http_one_photo.safetensors").is_file()


def ids(nodes: list[Node]) -> set[str]:
    return {node.id for node in nodes}


def check_saved_images(server, result, prompt: Graph, name: str, wset: str) -> None:
    """The SaveImage node's images: one SIZE x SIZE image, or for the bias sweep one per bias, stitched
    left to right (current set) or as a batch (legacy set)."""
    images = server.images(result, prompt.node("SaveImage").id)
    if name != "perfusion_bias_sweep":
        assert [image.shape for image in images] == [(SIZE, SIZE, 3)], name
        return
    biases = len(prompt.nodes("PerfusionConceptLoader"))
    if wset == "legacy":
        assert [image.shape for image in images] == [(SIZE, SIZE, 3)] * biases
        assert not np.array_equal(images[0], images[-1]), "the bias changes the image"
    else:
        assert [image.shape for image in images] == [(SIZE, biases * SIZE + (biases - 1) * STITCH_GAP, 3)]


def test_no_shipped_node_loses_widget_values_on_load(comfy_server):
    """Opening a saved workflow gives back its widget values: no node of either set hits the frontend's
    load migration that drops the values saved at forceInput positions (see values_dropped_on_load), on
    today's frontend or on 1.32."""
    info = comfy_server.object_info()
    classes = sorted(
        {node["class_type"] for wset in SET_NAMES for n in NAMES for node in api_workflow(n, wset).values()}
    )
    hits = [
        f"{ct} on frontend {frontend.name}: the value after '{', '.join(dropped)}' is lost"
        for ct in classes
        for frontend in (CURRENT_FRONTEND, LEGACY_FRONTEND)
        if (dropped := values_dropped_on_load(NodeSpec.from_object_info(ct, info[ct]), frontend))
    ]
    assert not hits, (
        "re-opening a saved workflow shifts widget values (give the node's seed input "
        f"'control_after_generate': True): {hits}"
    )


@pytest.mark.hosts
def test_workflow_sets_run_on_this_host(comfy_server, tiny_ckpt_name):
    """On every host of the matrix: the legacy set's node classes all exist and every API twin of each
    set the host has the nodes for validates against its /object_info (inputs known, required ones set,
    link types); the SD1.5 twins of those sets run to their images (the SDXL twins use the same node
    classes and are validated only: training the SDXL fixture on every host is too slow); the files of a
    set are current on its reference host. Hosts with Batch Images run the current set too."""
    info = comfy_server.object_info()
    assert not missing_classes(info, "legacy"), "the legacy set must run on every supported host"
    usable = [wset for wset in SET_NAMES if not missing_classes(info, wset)]
    for wset in usable:
        for name in NAMES:
            prompt = api_workflow(name, wset)
            validate(prompt, node_specs(info, prompt))
    version = host_version(comfy_server.url)
    for wset in SETS.values():
        if version == wset.reference_host:
            stale = stale_files(info, wset)
            assert not stale, (
                f"run `python -m workflows.build_workflows --set {wset.name}` on {version}: {stale}"
            )
    train_fixture_concepts(comfy_server, tiny_ckpt_name)
    images = [f"{word}_{i}.png" for word in FIXTURE_CONCEPTS for i in range(3)]
    for wset in usable:
        for name in (n for n in NAMES if "sdxl" not in n):
            values = FixtureValues(
                tiny_ckpt_name,
                images=images,
                size=SIZE,
                steps=STEPS,
                train_steps=2,
                overrides={"PerfusionSaveConcept": {"name": f"hosts_{wset}_{name}", "overwrite": True}},
            )
            prompt = for_fixture(api_workflow(name, wset), values)
            result = comfy_server.run(prompt)
            assert result.success, f"{wset}/{name} on ComfyUI {version}: {result.error_text}"
            check_saved_images(comfy_server, result, prompt, name, wset)


def bypass_concepts(prompt: Graph) -> Graph:
    """The graph with every concept loader bypassed (its MODEL/CLIP outputs replaced by its inputs)."""
    loaders = ids(prompt.nodes("PerfusionConceptLoader"))

    def source(ref: list) -> list:
        while ref[0] in loaders:
            ref = prompt[ref[0]]["inputs"]["model" if ref[1] == 0 else "clip"]
        return ref

    out = Graph({nid: copy.deepcopy(node) for nid, node in prompt.items() if nid not in loaders})
    for node in out.values():
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                node["inputs"][name] = source(value)
    return out


def distinct_prompts(ckpt: str) -> list[tuple[str, Graph]]:
    """(label, prompt): concept sets, biases, key-lock modes and plain prompts, each at two seeds."""
    loader = "PerfusionConceptLoader"
    configs = [
        ("plain", bypass_concepts(fixture_prompt("perfusion_generate", ckpt))),
        ("hugsy b0.5", fixture_prompt("perfusion_generate", ckpt, **{loader: {"bias": 0.5}})),
        ("hugsy b0.7", fixture_prompt("perfusion_generate", ckpt)),
        ("hugsy b0.9", fixture_prompt("perfusion_generate", ckpt, **{loader: {"bias": 0.9}})),
        (
            "zorbo b0.6",
            fixture_prompt(
                "perfusion_generate", ckpt, **{loader: {"concept_name": "zorbo.safetensors", "bias": 0.6}}
            ),
        ),
        ("hugsy+zorbo", fixture_prompt("perfusion_two_concepts", ckpt)),
        ("hugsy global", fixture_prompt("perfusion_global_key_lock", ckpt)),
    ]
    out = []
    for label, prompt in configs:
        for seed in (1, 2):
            variant = copy.deepcopy(prompt)
            variant.inputs("KSampler")["seed"] = seed
            out.append((f"{label} seed {seed}", variant))
    return out


def with_prefix(prompt: Graph, prefix: str) -> Graph:
    out = copy.deepcopy(prompt)
    for save in out.nodes("SaveImage"):
        out.inputs(save)["filename_prefix"] = prefix
    return out


def run_alone(server, prompt: Graph):
    """Run with a cold executor: POST /free drops the node cache and unloads models before the run;
    a run that still reports cached nodes (the worker took it before the flags) is repeated."""
    for _ in range(3):
        server.free(unload_models=True, free_memory=True)
        result = server.run(prompt, check=True)
        if not [n for e in result.events("execution_cached") for n in e["nodes"]]:
            return result
    pytest.fail("POST /free did not give a cold cache in 3 tries")


def test_mixed_batch_matches_each_prompt_run_alone(comfy_server, tiny_ckpt_name, server_concepts):
    distinct = distinct_prompts(tiny_ckpt_name)
    order = [(k * 3) % len(distinct) for k in range(BATCH)]  # stride coprime to 14: every prompt, mixed
    assert set(order) == set(range(len(distinct)))
    configs = [distinct[i][0].rsplit(" seed", 1)[0] for i in order]
    assert all(a != b for a, b in zip(configs, configs[1:])), "neighbours in the queue use different concepts"
    batch = [with_prefix(distinct[i][1], f"batch/{k:02d}") for k, i in enumerate(order)]
    results = comfy_server.run_many(batch, timeout=1800)
    failed = [(distinct[i][0], r.error_text) for i, r in zip(order, results) if not r.success]
    assert not failed, failed
    assert any(
        prompt.node("CheckpointLoaderSimple").id in e["nodes"]
        for prompt, r in zip(batch, results)
        for e in r.events("execution_cached")
    ), "the batch should share the cached checkpoint, or this test proves nothing about cache state"

    alone = {}
    for i, (_, prompt) in enumerate(distinct):
        (alone[i],) = comfy_server.images(run_alone(comfy_server, with_prefix(prompt, f"alone/{i:02d}")))
    for k, (i, result) in enumerate(zip(order, results)):
        (image,) = comfy_server.images(result)
        assert np.array_equal(image, alone[i]), (
            f"batch item {k} ({distinct[i][0]}) differs from its run alone"
        )
    labels = [label for label, _ in distinct]
    plain, concept = alone[labels.index("plain seed 1")], alone[labels.index("hugsy b0.5 seed 1")]
    assert not np.array_equal(plain, concept), "the concept changes the image (else equality proves little)"


def test_bias_sweep_script_against_the_server(comfy_server, tiny_ckpt_name, server_concepts, tmp_path):
    script = repo_root() / "workflows" / "bias_sweep_http.py"
    cmd = [
        sys.executable,
        str(script),
        "--server",
        f"127.0.0.1:{comfy_server.port}",
        "--concept",
        server_concepts["hugsy"],
        "--biases",
        "0.4,0.6,0.8",
        "--ckpt",
        tiny_ckpt_name,
        "--steps",
        str(STEPS),
        "--size",
        str(SIZE),
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = sorted(p.name for p in tmp_path.glob("*.png"))
    assert files == ["hugsy_bias0.40.png", "hugsy_bias0.60.png", "hugsy_bias0.80.png"], proc.stdout
    images = [load_image(tmp_path / f) for f in files]
    assert all(img.shape == (SIZE, SIZE, 3) for img in images)
    assert not np.array_equal(images[0], images[-1]), "the bias changes the image"
