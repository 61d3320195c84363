"""The real ComfyUI frontend in headless Chromium (Playwright), served by the real main.py.

For every shipped UI workflow of the set this host runs (``workflows/`` where Batch Images is, as on
the default 0.33.0 with frontend 1.49; else ``workflows/legacy/``): the frontend loads it without
reporting a missing node, re-saves it to exactly the file we ship (so the generator writes what File ->
Save writes, ``widgets_values_named`` included), exports exactly our API twin, shows the pack's widgets
with their documented ranges, and queueing from the page produces an image. Screenshots land in
tests/artifacts/<workflow>.png. The legacy set, made for frontend 1.32, must still open on today's
frontend with no missing node and export its API twin's graph.

Needs Debian's Chromium at /usr/bin/chromium (`apt-get install -y chromium`) and the `playwright`
wheel (its bundled driver only; no `playwright install`). Skipped when Chromium is absent, except
under CI, where it must run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
import requests

from harness.workflow_files import (
    FIXTURE_CONCEPTS,
    FixtureValues,
    api_workflow,
    for_fixture,
    missing_classes,
    train_fixture_concepts,
    ui_workflow,
    workflow_set_for,
)
from workflows.build_workflows import NAMES, SETS, workflow
from workflows.ui_format import node_specs, to_ui

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
GATE_WIDGETS = {"bias": (-1.0, 2.0), "temperature": (0.01, 1.0)}  # documented min, max
OUR_NODES = (
    "PerfusionConceptLoader",
    "PerfusionApplyConcept",
    "PerfusionTrainConcept",
    "PerfusionSaveConcept",
)

if not CHROMIUM.exists() and not os.environ.get("CI"):
    pytest.skip(
        f"{CHROMIUM} not found (install it with `apt-get install -y chromium`); required when CI is set",
        allow_module_level=True,
    )


def ui_for_fixture(name: str, object_info: Mapping, values: FixtureValues, wset: str = "current") -> dict:
    """The UI-format twin of ``for_fixture(api_workflow(name, wset), values)``, made by the same
    generator that wrote the shipped file (so only the substituted values differ from it)."""
    wf = workflow(name, SETS[wset])
    wf.prompt = for_fixture(wf.prompt, values)
    return to_ui(wf, node_specs(object_info, wf.prompt), SETS[wset].frontend)


@pytest.fixture(scope="module")
def page(comfy_server):
    from playwright.sync_api import sync_playwright

    # A returning user: no first-run template browser over the canvas (it would hide the screenshots).
    requests.post(
        f"{comfy_server.url}/settings/Comfy.TutorialCompleted", json=True, timeout=30
    ).raise_for_status()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(comfy_server.url)
        page.wait_for_function(
            "() => window.app?.graph && window.LiteGraph?.registered_node_types", timeout=120_000
        )
        # Record what the frontend itself reports as missing on load: it hands the list to the
        # extensions' afterConfigureGraph hook (type names in older frontends, {type, ...} in 1.49).
        page.evaluate(
            """() => {
              window.__missingNodes = [];
              window.app.registerExtension({
                name: "perfusion.tests.missingNodes",
                afterConfigureGraph(missing) {
                  window.__missingNodes.push(...(missing ?? []).map(m => typeof m === "string" ? m : m.type));
                },
              });
            }"""
        )
        page.frontend_version = page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__ ?? 'unknown'")
        page.errors = errors  # uncaught page errors, checked after each workflow
        yield page
        browser.close()


@pytest.fixture(scope="module")
def wset(comfy_server) -> str:
    """The workflow set this host runs ("current" on the default host)."""
    return workflow_set_for(comfy_server.object_info())


@pytest.fixture(scope="module")
def fixture_values(comfy_server, tiny_ckpt_name, sdxl_ckpt_name) -> FixtureValues:
    train_fixture_concepts(comfy_server, tiny_ckpt_name, sdxl_ckpt_name=sdxl_ckpt_name)
    return FixtureValues(
        tiny_ckpt_name,
        sdxl_ckpt_name=sdxl_ckpt_name,
        images=[f"{word}_{i}.png" for word in FIXTURE_CONCEPTS for i in range(3)],
        train_steps=2,
        overrides={"PerfusionSaveConcept": {"name": "browser_trained", "overwrite": True}},
    )


def load(page, workflow: dict) -> dict:
    """Load a UI workflow like a user opening it; return what the frontend re-saves and exports."""
    return page.evaluate(
        """async (wf) => {
          window.__missingNodes = [];
          await window.app.loadGraphData(wf);
          const exported = await window.app.graphToPrompt();
          // through JSON, as File -> Save writes it (slots are class instances with extra fields)
          const saved = JSON.parse(JSON.stringify(window.app.graph.serialize()));
          return {saved, api: exported.output, missing: window.__missingNodes};
        }""",
        workflow,
    )


def widgets_of(page, class_type: str) -> list[dict]:
    return page.evaluate(
        """(type) => window.app.graph.nodes.filter(n => n.type === type).map(n => n.widgets.map(w => ({
             name: w.name, type: w.type, value: w.value, min: w.options?.min, max: w.options?.max,
             values: Array.isArray(w.options?.values) ? w.options.values : null})))""",
        class_type,
    )


def normalise(nodes: list[dict]) -> dict:
    """Nodes by id; unconnected outputs compare equal whether saved as [] or null."""
    out = {}
    for node in nodes:
        node = dict(node, outputs=[dict(o, links=o.get("links") or []) for o in node.get("outputs", [])])
        out[node["id"]] = node
    return out


def resave_changes(shipped: dict, saved: dict) -> list[tuple]:
    """(node id, key, ours, the frontend's) for every node key that re-saving changes; a node the
    frontend dropped shows as its keys against None, one it added as (id, "node", None, its type)."""
    theirs, ours = normalise(saved["nodes"]), normalise(shipped["nodes"])
    return [
        (nid, key, ours[nid].get(key), theirs.get(nid, {}).get(key))
        for nid in ours
        for key in {*ours[nid], *theirs.get(nid, {})}
        if ours[nid].get(key) != theirs.get(nid, {}).get(key)
    ] + [(nid, "node", None, theirs[nid].get("type")) for nid in theirs.keys() - ours.keys()]


def wait_for_new_history(server, before: set[str], timeout: float = 900.0) -> dict:
    """The history entry of the prompt the page queued, once it ends. A guard against a hang, not a
    speed check: the SDXL training graph takes 74 s alone on 2 cores and over 300 s beside other jobs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        history = server.history()
        new = [entry for pid, entry in history.items() if pid not in before]
        if new and new[0].get("status", {}).get("completed") is not None:
            return new[0]
        time.sleep(0.25)
    raise TimeoutError(
        f"the prompt queued from the page did not finish in {timeout}s.\n{server.log_text(30)}"
    )


@pytest.mark.parametrize("name", NAMES)
def test_shipped_workflow_in_the_frontend(page, comfy_server, fixture_values, wset, name):
    shipped = ui_workflow(name, wset)
    result = load(page, shipped)
    assert result["missing"] == [], f"the frontend reports missing nodes: {result['missing']}"
    registered = page.evaluate("() => Object.keys(window.LiteGraph.registered_node_types)")
    assert {n["type"] for n in shipped["nodes"]} <= set(registered)
    changed = resave_changes(shipped, result["saved"])
    assert not changed, (
        f"frontend {page.frontend_version}: re-saving {wset}/{name} changes the file "
        f"(node, key, ours, frontend's): {changed[:5]}"
    )
    for key in ("groups", "extra", "version", "last_node_id", "last_link_id"):
        assert result["saved"][key] == shipped[key], (key, result["saved"][key], shipped[key])
    assert sorted(result["saved"]["links"]) == sorted(shipped["links"])
    assert result["api"] == api_workflow(name, wset), "Export (API) differs from the shipped API twin"

    for class_type in ("PerfusionConceptLoader", "PerfusionApplyConcept"):
        for widgets in widgets_of(page, class_type):
            by_name = {w["name"]: w for w in widgets}
            for widget, (low, high) in GATE_WIDGETS.items():
                w = by_name[widget]
                assert (w["type"], w["min"], w["max"]) == ("number", low, high), (class_type, w)
            assert by_name["key_lock"]["type"] == "combo"
            assert by_name["key_lock"]["values"] == ["local", "global", "off"]
    present = {n["type"] for n in shipped["nodes"]} & set(OUR_NODES)
    assert present, f"{name} uses none of the pack's nodes"

    runnable = ui_for_fixture(name, comfy_server.object_info(), fixture_values, wset)
    assert load(page, runnable)["missing"] == []
    page.evaluate("() => window.app.extensionManager.command.execute('Comfy.Canvas.FitView')")
    page.wait_for_timeout(300)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(shot))
    print(f"screenshot: {shot.relative_to(ARTIFACTS.parent.parent)}")

    page.errors.clear()
    before = set(comfy_server.history())
    page.evaluate("() => window.app.queuePrompt(0)")
    entry = wait_for_new_history(comfy_server, before)
    assert entry["status"]["status_str"] == "success", entry["status"]
    images = comfy_server.images(entry)
    assert images, "queueing from the page produced no image"
    assert not page.errors, page.errors


def test_missing_node_is_reported(page, wset):
    """The missing-node check above can fail: an unknown node type is reported by the frontend."""
    broken = ui_workflow(NAMES[0], wset)
    broken["nodes"][0] = dict(broken["nodes"][0], type="PerfusionNoSuchNode")
    assert load(page, broken)["missing"] == ["PerfusionNoSuchNode"]
    page.keyboard.press("Escape")


def test_resave_check_sees_a_rewritten_file(page, wset):
    """The re-save check above can fail: a file the frontend rewrites on load is caught, and on the node
    and key it rewrote (here a socket saved without the localized_name the frontend gives it)."""
    broken = ui_workflow(NAMES[0], wset)
    loader = next(n for n in broken["nodes"] if n["type"] == "PerfusionConceptLoader")
    del loader["inputs"][0]["localized_name"]
    changed = resave_changes(broken, load(page, broken)["saved"])
    assert [(nid, key) for nid, key, *_ in changed] == [(loader["id"], "inputs")], changed


@pytest.mark.parametrize("name", NAMES)
def test_legacy_workflow_opens_in_this_frontend(page, comfy_server, name):
    """A workflows/legacy/ file (made for frontend 1.32) opens here with every node known and exports
    its API twin's graph (node titles aside: they follow this host's display names)."""
    assert not missing_classes(comfy_server.object_info(), "legacy"), "the legacy set runs on every host"
    result = load(page, ui_workflow(name, "legacy"))
    assert result["missing"] == [], f"the frontend reports missing nodes: {result['missing']}"

    def graph(prompt: dict) -> dict:
        return {nid: (node["class_type"], node["inputs"]) for nid, node in prompt.items()}

    assert graph(result["api"]) == graph(api_workflow(name, "legacy"))
