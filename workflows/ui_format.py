"""API-format graph -> the UI-format workflow JSON that ComfyUI's frontend writes on File -> Save.

Why: the frontend needs node positions, sizes, sockets and ``widgets_values`` in its own widget order,
which only the host's ``/object_info`` defines (input order, which inputs are widgets, the extra
"control_after_generate" value after seed widgets, LoadImage's "upload" widget). Deriving the UI file
from the API graph keeps the two twins in lock-step; the browser test checks the result against the
frontend's own ``graph.serialize()`` and ``graphToPrompt()``.

Two frontend generations write different files (:class:`Frontend`): 1.49 (ComfyUI 0.33) saves every
widget value twice (``widgets_values`` and ``widgets_values_named``), no ``widgets_values`` on a node
without widgets and no group ``font_size``; 1.32 (ComfyUI 0.3.75) saves positional values only, ``[]`` for
a node without widgets, and ``extra.workflowRendererVersion``. An autogrow input (Batch Images' "images")
becomes one socket per link plus a spare one.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")  # inputs the frontend shows as widgets
SEED_NAMES = ("seed", "noise_seed")  # the frontend adds a control widget after these INT widgets
CONTROL_VALUE = "fixed"  # reproducible templates: the seed stays as saved
# input option -> (widget name, type, label, saved value) of the upload button the frontend adds
UPLOAD_WIDGETS = {"image_upload": ("upload", "IMAGEUPLOAD", "choose file to upload", "image")}
OPTIONAL_SHAPE = 7  # LiteGraph's RenderShape.HOLLOW, how the frontend marks optional sockets
NOTE_COLOR, NOTE_BGCOLOR = "#432", "#653"
GROUP_COLOR = "#3f789e"
COLUMN_GAP, ROW_GAP, GROUP_PAD = 60, 40, 40
NODE_WIDTH, BARE_NODE_WIDTH, TEXT_NODE_SIZE = 270, 140, (400, 200)
NODE_MARGIN, WIDGET_MARGIN, SLOT_HEIGHT, WIDGET_HEIGHT, TEXT_HEIGHT = 6, 8, 20, 24, 54
TITLE_HEIGHT, PREVIEW_HEIGHT = 30, 220
TITLE_CHAR_WIDTH, TITLE_PAD = 10, 60  # a node is at least as wide as its title (an upper bound)
AUTOGROW = "COMFY_AUTOGROW_V3"  # an input that grows a socket per link ("images" -> "images.image0", ...)
ApiPrompt = dict[str, dict[str, Any]]  # node id (a decimal string) -> {class_type, inputs}


@dataclass(frozen=True)
class Frontend:
    """How one frontend generation serialises a graph on File -> Save (measured in the browser)."""

    name: str
    named_values: bool  # widgets_values_named (widget name -> value) beside widgets_values
    empty_widgets_values: bool  # a node without widgets saves "widgets_values": [] (else no key)
    group_font_size: bool  # groups carry "font_size"
    seed_names_count_twice: bool  # its load migration counts a "seed" widget as two values (see below)
    renderer: str | None = None  # extra.workflowRendererVersion it writes ("LG": the LiteGraph canvas)


CURRENT_FRONTEND = Frontend("1.49 (ComfyUI 0.33)", True, False, False, False)
LEGACY_FRONTEND = Frontend("1.32 (ComfyUI 0.3.75)", False, True, True, True, "LG")


class WorkflowSpecError(ValueError):
    """A graph that the host's /object_info would not accept (names the node and input)."""


@dataclass
class InputSpec:
    name: str
    type: str
    options: dict
    optional: bool

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES and not self.options.get("forceInput", False)

    @property
    def is_text(self) -> bool:
        return self.type == "STRING" and bool(self.options.get("multiline"))

    @property
    def is_autogrow(self) -> bool:
        return self.type == AUTOGROW

    def grown(self) -> list[InputSpec]:
        """An autogrow input's sockets in order: "<name>.<prefix><k>" (or "<name>.<names[k]>"), the first
        ``min`` required; each carries its short name as ``label`` (what the node shows)."""
        template = self.options["template"]
        section = next(s for s in ("required", "optional") if template["input"].get(s))
        (spec,) = template["input"][section].values()
        if "prefix" in template:
            names = [f"{template['prefix']}{k}" for k in range(template["max"])]
        else:
            names = list(template["names"])
        low = template.get("min", 1) if section == "required" else 0
        return [
            InputSpec(f"{self.name}.{short}", str(spec[0]), {"label": short}, self.optional or k >= low)
            for k, short in enumerate(names)
        ]


@dataclass
class NodeSpec:
    """One node class as /object_info describes it."""

    class_type: str
    display_name: str
    inputs: list[InputSpec]
    outputs: list[tuple[str, str]]  # (name, type)
    shows_image: bool  # output nodes and image loaders draw a preview below their widgets

    @classmethod
    def from_object_info(cls, class_type: str, info: Mapping) -> NodeSpec:
        inputs = []
        for section in ("required", "optional"):
            for name, spec in (info["input"].get(section) or {}).items():
                kind = spec[0]
                options = dict(spec[1]) if len(spec) > 1 and isinstance(spec[1], dict) else {}
                type_name = "COMBO" if isinstance(kind, list) else str(kind)
                inputs.append(InputSpec(name, type_name, options, section == "optional"))
        outputs = list(zip(info["output_name"], info["output"]))
        shows_image = bool(info.get("output_node")) or any(i.options.get("image_upload") for i in inputs)
        return cls(class_type, info.get("display_name") or class_type, inputs, outputs, shows_image)

    @property
    def sockets(self) -> list[InputSpec]:
        """The sockets of a node with no autogrow input (see :meth:`sockets_for`)."""
        return self.sockets_for({})

    def sockets_for(self, inputs: Mapping[str, Any]) -> list[InputSpec]:
        """The sockets a node with these API inputs shows: an autogrow input as its linked sockets
        (a leading run) plus one empty socket to link the next, as the frontend draws it."""
        out: list[InputSpec] = []
        for i in self.inputs:
            if i.is_widget:
                continue
            if not i.is_autogrow:
                out.append(i)
                continue
            grown = i.grown()
            used = sum(1 for g in grown if g.name in inputs)
            out.extend(grown[: min(len(grown), max(used + 1, sum(not g.optional for g in grown)))])
        return out

    def input_names(self) -> list[str]:
        """Every input the host accepts, autogrow sockets spelt out, in the host's order."""
        return [g.name for i in self.inputs for g in (i.grown() if i.is_autogrow else [i])]

    @property
    def widgets(self) -> list[InputSpec]:
        return [i for i in self.inputs if i.is_widget]


@dataclass
class UiNode:
    """Layout facts the API format lacks, attached to one API node id."""

    title: str | None = None
    group: str | None = None
    column: int | None = None  # None: one right of the deepest input


@dataclass
class Note:
    """A frontend-only text node (not part of the API prompt), drawn in a band above the graph."""

    text: str
    size: tuple[int, int] = (2 * NODE_WIDTH, 170)


@dataclass
class Workflow:
    name: str
    title: str
    description: str  # one sentence for the template browser's thumbnail
    prompt: ApiPrompt
    ui: dict[str, UiNode] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)


def node_specs(object_info: Mapping, prompt: ApiPrompt) -> dict[str, NodeSpec]:
    missing = sorted({n["class_type"] for n in prompt.values()} - set(object_info))
    if missing:
        raise WorkflowSpecError(f"the host's /object_info has no node class {missing}")
    return {
        ct: NodeSpec.from_object_info(ct, object_info[ct])
        for ct in {n["class_type"] for n in prompt.values()}
    }


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)


def validate(prompt: ApiPrompt, specs: Mapping[str, NodeSpec]) -> None:
    """Every input known, every required one set, widgets hold literals, links join matching types."""
    for node_id, node in prompt.items():
        spec = specs[node["class_type"]]
        known = {g.name: g for i in spec.inputs for g in (i.grown() if i.is_autogrow else [i])}
        for name, value in node["inputs"].items():
            where = f"node {node_id} ({node['class_type']}) input '{name}'"
            if name not in known:
                raise WorkflowSpecError(f"{where}: the host does not know this input")
            if known[name].is_widget == _is_link(value):
                raise WorkflowSpecError(f"{where}: a widget needs a value, a socket needs a link")
            if _is_link(value):
                source = prompt.get(value[0])
                if source is None:
                    raise WorkflowSpecError(f"{where}: links to missing node {value[0]}")
                out_type = specs[source["class_type"]].outputs[value[1]][1]
                if out_type != known[name].type and "*" not in (out_type, known[name].type):
                    raise WorkflowSpecError(f"{where}: {out_type} output into a {known[name].type} input")
        for i in known.values():
            if not i.optional and i.name not in node["inputs"]:
                raise WorkflowSpecError(
                    f"node {node_id} ({node['class_type']}): required input '{i.name}' unset"
                )
            if i.optional and i.is_widget and i.name not in node["inputs"]:
                raise WorkflowSpecError(
                    f"node {node_id} ({node['class_type']}): set optional widget '{i.name}' explicitly "
                    "(the frontend saves every widget, so the API twin must too)"
                )
        for i in spec.inputs:
            if i.is_autogrow:
                linked = [g.name in node["inputs"] for g in i.grown()]
                if not all(linked[: sum(linked)]):
                    raise WorkflowSpecError(
                        f"node {node_id} ({node['class_type']}): link '{i.name}' sockets in order, "
                        "without gaps (the frontend renumbers them)"
                    )


def api_twin(wf: Workflow, specs: Mapping[str, NodeSpec]) -> ApiPrompt:
    """What the frontend's Export (API) writes: inputs, class_type and the node title."""
    out = {}
    for node_id, node in wf.prompt.items():
        spec = specs[node["class_type"]]
        order = spec.input_names()
        inputs = {k: node["inputs"][k] for k in sorted(node["inputs"], key=order.index)}
        # graphToPrompt lists widget values first in widget order, then the links in socket order.
        widgets = {k: v for k, v in inputs.items() if not _is_link(v)}
        links = {k: v for k, v in inputs.items() if _is_link(v)}
        title = (wf.ui.get(node_id) or UiNode()).title or spec.display_name
        out[node_id] = {
            "inputs": {**widgets, **links},
            "class_type": node["class_type"],
            "_meta": {"title": title},
        }
    return out


def _estimate_size(spec: NodeSpec, inputs: Mapping[str, Any], title: str) -> list[int]:
    """At least the size the frontend gives a new node (LiteGraph's computeSize, measured on frontends
    1.32 and 1.49; it enlarges a smaller saved size on load), plus room for the image preview of loaders
    and output nodes. An autogrow node gets one more socket row: linking its sockets on load adds and
    removes the spare one, and the node keeps the largest size it had."""
    widgets = spec.widgets
    count = len(widgets) + sum(1 for i in widgets if _extra_widget(i) is not None)
    text = sum(1 for i in widgets if i.is_text)
    rows = len(spec.sockets_for(inputs)) + sum(1 for i in spec.inputs if i.is_autogrow)
    height = NODE_MARGIN + SLOT_HEIGHT * max(rows, len(spec.outputs))
    if count:
        height += WIDGET_MARGIN + WIDGET_HEIGHT * (count - text) + TEXT_HEIGHT * text
    if text:
        return [TEXT_NODE_SIZE[0], max(height, TEXT_NODE_SIZE[1])]
    width = NODE_WIDTH if count else max(BARE_NODE_WIDTH, TITLE_CHAR_WIDTH * len(title) + TITLE_PAD)
    return [width, height + (PREVIEW_HEIGHT if spec.shows_image else 0)]


@dataclass(frozen=True)
class ExtraWidget:
    """A widget the frontend adds after an input's own widget; its value is saved in widgets_values."""

    name: str
    type: str
    label: str
    value: Any
    is_input: bool  # listed in the node's "inputs" (upload buttons) or canvas-only (seed control)


SEED_CONTROL = ExtraWidget("control_after_generate", "COMBO", "control after generate", CONTROL_VALUE, False)


def _extra_widget(i: InputSpec) -> ExtraWidget | None:
    if i.options.get("control_after_generate") or (i.type == "INT" and i.name in SEED_NAMES):
        return SEED_CONTROL
    for option, (name, type_name, label, value) in UPLOAD_WIDGETS.items():
        if i.options.get(option):
            return ExtraWidget(name, type_name, label, value, True)
    return None


def _columns(wf: Workflow) -> dict[str, int]:
    cols: dict[str, int] = {}

    def column(node_id: str) -> int:
        if node_id not in cols:
            fixed = (wf.ui.get(node_id) or UiNode()).column
            deps = [v[0] for v in wf.prompt[node_id]["inputs"].values() if _is_link(v)]
            cols[node_id] = fixed if fixed is not None else 1 + max((column(d) for d in deps), default=-1)
        return cols[node_id]

    for node_id in wf.prompt:
        column(node_id)
    return cols


def _layout(wf: Workflow, specs: Mapping[str, NodeSpec], note_ids: list[str]) -> tuple[dict, dict]:
    """(pos, size) per node id: columns left to right by link depth, notes in a band above."""
    cols = _columns(wf)
    sizes = {
        nid: _estimate_size(specs[n["class_type"]], n["inputs"], _title(wf, specs, nid))
        for nid, n in wf.prompt.items()
    }
    used = sorted(set(cols.values()))  # hinted columns may skip numbers: close the gaps
    widths = [max(sizes[n][0] for n in cols if cols[n] == c) for c in used]
    x_of = [sum(widths[:k]) + COLUMN_GAP * k for k in range(len(used))]
    pos: dict[str, list[int]] = {}
    y_next = [0] * len(used)
    for nid in wf.prompt:
        k = used.index(cols[nid])
        pos[nid] = [x_of[k], y_next[k]]
        y_next[k] += sizes[nid][1] + ROW_GAP
    band = max((n.size[1] for n in wf.notes), default=0) + 2 * GROUP_PAD + TITLE_HEIGHT
    x = 0
    for nid, note in zip(note_ids, wf.notes):
        pos[nid], sizes[nid] = [x, -band], list(note.size)
        x += note.size[0] + COLUMN_GAP
    return pos, sizes


def _execution_order(node_ids: list[str], links: list[list]) -> list[str]:
    """LiteGraph's computeExecutionOrder: Kahn's algorithm, queue seeded in node order, links followed
    in link-id order (which is the output slots' order here)."""
    pending = {nid: 0 for nid in node_ids}
    for link in links:
        pending[str(link[3])] += 1
    queue = [nid for nid in node_ids if pending[nid] == 0]
    order = []
    while queue:
        nid = queue.pop(0)
        order.append(nid)
        for link in links:
            if str(link[1]) == nid:
                pending[str(link[3])] -= 1
                if pending[str(link[3])] == 0:
                    queue.append(str(link[3]))
    return order


def _links(prompt: ApiPrompt, specs: Mapping[str, NodeSpec]) -> list[list]:
    """[id, source, slot, target, target slot, type], numbered by source node, output slot, target."""
    found = []
    for target, node in prompt.items():
        sockets = [i.name for i in specs[node["class_type"]].sockets_for(node["inputs"])]
        for name in sockets:
            value = node["inputs"].get(name)
            if value is not None:
                out_type = specs[prompt[value[0]]["class_type"]].outputs[value[1]][1]
                found.append((int(value[0]), value[1], int(target), sockets.index(name), out_type))
    return [[k, *link] for k, link in enumerate(sorted(found), start=1)]


def _ui_inputs(spec: NodeSpec, node_id: str, inputs: Mapping[str, Any], links: list[list]) -> list[dict]:
    """Sockets first, then one entry per widget (the frontend lists widgets as inputs too)."""
    incoming = {(str(link[3]), link[4]): link[0] for link in links}
    entries = []
    for slot, i in enumerate(spec.sockets_for(inputs)):
        entry: dict[str, Any] = {"label": i.options["label"]} if "label" in i.options else {}
        entry.update(localized_name=i.name, name=i.name)
        if i.optional:
            entry["shape"] = OPTIONAL_SHAPE
        entry.update(type=i.type, link=incoming.get((node_id, slot)))
        entries.append(entry)
    for i in spec.widgets:
        entry = {"localized_name": i.name, "name": i.name}
        if i.optional:
            entry["shape"] = OPTIONAL_SHAPE
        entry.update(type=i.type, widget={"name": i.name}, link=None)
        entries.append(entry)
        extra = _extra_widget(i)
        if extra is not None and extra.is_input:
            entries.append(
                {
                    "localized_name": extra.label,
                    "name": extra.name,
                    "type": extra.type,
                    "widget": {"name": extra.name},
                    "link": None,
                }
            )
    return entries


def _widget_values(spec: NodeSpec, inputs: Mapping[str, Any]) -> list[Any]:
    values: list[Any] = []
    for i in spec.widgets:
        values.append(inputs[i.name])
        extra = _extra_widget(i)
        if extra is not None:
            values.append(extra.value)
    return values


def values_dropped_on_load(spec: NodeSpec, frontend: Frontend) -> list[str]:
    """The forceInput inputs for which ``frontend`` drops a saved widget value on load ([] = safe).

    The frontend migrates files from before widgets became sockets (``migrateWidgetsValues``): when a
    node's saved ``widgets_values`` has exactly one entry per widget input and per forceInput input (two
    for an input whose options set ``control_after_generate``), it takes the values at the forceInput
    positions for stale and drops them. Frontends 1.39 and 1.49 count a "seed" widget whose control
    widget comes by its name only (no ``control_after_generate`` option) once, so a node with such a
    seed and one forceInput input hits the guess with a file the frontend itself saved: every value after
    the forceInput's position lands in the widget before it (seen in 1.49 in the browser; 1.32 counts
    "seed" twice). The cure is in the node: ``control_after_generate: True`` on the seed."""
    saved = len(_widget_names(spec))
    counted, dropped = 0, []
    for i in spec.inputs:
        if not (i.is_widget or i.options.get("forceInput")):
            continue
        twice = i.options.get("control_after_generate") or (
            frontend.seed_names_count_twice and i.name in SEED_NAMES
        )
        counted += 2 if twice else 1
        if i.options.get("forceInput"):
            dropped.append(i.name)
    return dropped if counted == saved else []


def _title(wf: Workflow, specs: Mapping[str, NodeSpec], node_id: str) -> str:
    return (wf.ui.get(node_id) or UiNode()).title or specs[wf.prompt[node_id]["class_type"]].display_name


def _widget_entries(frontend: Frontend, names: list[str], values: list[Any]) -> dict:
    if not values and not frontend.empty_widgets_values:
        return {}
    entries: dict[str, Any] = {"widgets_values": values}
    if frontend.named_values and values:
        entries["widgets_values_named"] = dict(zip(names, values, strict=True))
    return entries


def _widget_names(spec: NodeSpec) -> list[str]:
    names = []
    for i in spec.widgets:
        names.append(i.name)
        extra = _extra_widget(i)
        if extra is not None:
            names.append(extra.name)
    return names


def to_ui(wf: Workflow, specs: Mapping[str, NodeSpec], frontend: Frontend = CURRENT_FRONTEND) -> dict:
    """The UI-format workflow (version 0.4) for ``wf`` as ``frontend`` saves it; node ids equal the API
    ids."""
    validate(wf.prompt, specs)
    note_ids = [str(len(wf.prompt) + 1 + k) for k in range(len(wf.notes))]
    pos, sizes = _layout(wf, specs, note_ids)
    links = _links(wf.prompt, specs)
    order = _execution_order([*wf.prompt, *note_ids], links)
    nodes = []
    for nid, node in wf.prompt.items():
        spec = specs[node["class_type"]]
        outputs = [
            {
                "localized_name": name,
                "name": name,
                "type": t,
                "links": [k[0] for k in links if (str(k[1]), k[2]) == (nid, slot)],
            }
            for slot, (name, t) in enumerate(spec.outputs)
        ]
        entry = {"id": int(nid), "type": node["class_type"], "pos": pos[nid], "size": sizes[nid], "flags": {}}
        inputs = _ui_inputs(spec, nid, node["inputs"], links)
        entry.update(order=order.index(nid), mode=0, inputs=inputs, outputs=outputs)
        entry["properties"] = {"Node name for S&R": node["class_type"]}
        entry.update(_widget_entries(frontend, _widget_names(spec), _widget_values(spec, node["inputs"])))
        title = (wf.ui.get(nid) or UiNode()).title
        if title:
            entry["title"] = title
        nodes.append(entry)
    for nid, note in zip(note_ids, wf.notes):
        nodes.append(
            {
                "id": int(nid),
                "type": "Note",
                "pos": pos[nid],
                "size": sizes[nid],
                "flags": {},
                "order": order.index(nid),
                "mode": 0,
                "inputs": [],
                "outputs": [],
                "properties": {},
                **_widget_entries(frontend, ["text"], [note.text]),
                "color": NOTE_COLOR,
                "bgcolor": NOTE_BGCOLOR,
            }
        )
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-perfusion/workflows/{wf.name}")),
        "revision": 0,
        "last_node_id": max(int(n["id"]) for n in nodes),
        "last_link_id": len(links),
        "nodes": nodes,
        "links": links,
        "groups": _groups(wf, pos, sizes, frontend),
        "config": {},
        "extra": {
            "ds": {"scale": 1, "offset": [0, 0]},
            **({"workflowRendererVersion": frontend.renderer} if frontend.renderer else {}),
        },
        "version": 0.4,
    }


def _groups(
    wf: Workflow, pos: Mapping[str, list[int]], sizes: Mapping[str, list[int]], frontend: Frontend
) -> list[dict]:
    members: dict[str, list[str]] = {}
    for nid, ui in wf.ui.items():
        if ui.group:
            members.setdefault(ui.group, []).append(nid)
    groups = []
    for k, (title, ids) in enumerate(members.items(), start=1):
        x0 = min(pos[n][0] for n in ids) - GROUP_PAD // 2
        y0 = min(pos[n][1] for n in ids) - GROUP_PAD - TITLE_HEIGHT
        x1 = max(pos[n][0] + sizes[n][0] for n in ids) + GROUP_PAD // 2
        y1 = max(pos[n][1] + sizes[n][1] for n in ids) + GROUP_PAD // 2
        group = {"id": k, "title": title, "bounding": [x0, y0, x1 - x0, y1 - y0], "color": GROUP_COLOR}
        if frontend.group_font_size:
            group["font_size"] = 24
        groups.append({**group, "flags": {}})
    return groups
