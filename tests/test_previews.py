"""Previews while training: validation prompts sampled at step 0 and every N steps with ComfyUI's own
sampler, at the inference gate, shown on the training node and returned as its 'previews' output.

Everything runs through the real executor on the tiny fixture (64 px, 4 training steps, 2 sampler
steps per preview)."""

import logging

import numpy as np
import pytest
import torch

from harness.graph import Graph, Node
from harness.perfusion_graphs import train_prompt
from perfusion_core.concept_file import load_concept

SIZE, STEPS, EVERY, SAMPLER_STEPS = 64, 4, 2, 2
PROMPTS = ("a photo of {}", "{} on the beach")
PREVIEW_STEPS = (0, 2, 4)
UNENCODED_PREVIEW = 2  # protocol.BinaryEventTypes.UNENCODED_PREVIEW_IMAGE
PREVIEW_WITH_METADATA = 4  # protocol.BinaryEventTypes.PREVIEW_IMAGE_WITH_METADATA


def preview_settings(every: int = EVERY) -> dict:
    return {
        "preview_every": every,
        "validation_prompts": "\n".join(PROMPTS),
        "preview_size": SIZE,
        "preview_steps": SAMPLER_STEPS,
    }


def trainer(g: Graph) -> Node:
    return g.node("PerfusionTrainConcept")


def preview_of(g: Graph, output: list) -> str:
    """The id of the PreviewImage that shows `output` (a link)."""
    (node,) = [n for n in g.nodes("PreviewImage") if g.inputs(n)["images"] == output]
    return node.id


def previews_id(g: Graph) -> str:
    """The id of the PreviewImage that shows the training's previews."""
    return preview_of(g, trainer(g)[3])


def previews_graph(ckpt, images, *, seed: int, every: int = EVERY, save_name: str | None = None) -> Graph:
    """Training with its previews (output 3) shown by a PreviewImage."""
    g = train_prompt(
        ckpt,
        images,
        steps=STEPS,
        seed=seed,
        lr_v=0.3,
        lr_embedding=0.02,
        save_name=save_name,
        extra=preview_settings(every),
    )
    g.preview(trainer(g)[3])
    return g


def with_generation(g: Graph, text: str, seed: int) -> Graph:
    """Adds what a user generates with the trained concept: Apply Perfusion Concept (bias 0.70,
    temperature 0.15) -> CLIPTextEncode (text, empty negative) -> KSampler with the previews' sampler,
    steps, cfg and size -> VAEDecode -> PreviewImage."""
    ckpt = g.node("CheckpointLoaderSimple")
    applied = g.add(
        "PerfusionApplyConcept",
        model=ckpt[0],
        clip=ckpt[1],
        concept=trainer(g),
        bias=0.7,
        temperature=0.15,
        key_lock="local",
    )
    pos, neg = g.encode(applied[1], text), g.encode(applied[1], "")
    image = g.sample(applied[0], pos, neg, g.latent(SIZE), ckpt[2], seed=seed, steps=SAMPLER_STEPS, cfg=6.0)
    g.preview(image)
    return g


@pytest.fixture
def sampler_calls(comfy_host, monkeypatch):
    """Counts calls into ComfyUI's sampler (training itself never samples)."""
    import comfy.sample

    calls = []
    original = comfy.sample.sample

    def counting(*args, **kwargs):
        calls.append(kwargs.get("seed"))
        return original(*args, **kwargs)

    monkeypatch.setattr(comfy.sample, "sample", counting)
    return calls


def preview_events(result, kind: int) -> list:
    return [data for event, data in result.messages if event == kind]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def graphs(tiny_ckpt_name, toy_images) -> dict[str, Graph]:
    """Three trainings on the same images: previews on (seed 2), previews on (seed 1, also generating
    with the result), previews off (seed 1)."""
    images = toy_images["hugsy"]
    return {
        "other_seed": previews_graph(tiny_ckpt_name, images, seed=2),
        "on": with_generation(
            previews_graph(tiny_ckpt_name, images, seed=1, save_name="preview_on"),
            PROMPTS[0].format("hugsy"),
            seed=0,
        ),
        "off": previews_graph(tiny_ckpt_name, images, seed=1, every=0, save_name="preview_off"),
    }


@pytest.fixture(scope="module")
def runs(comfy_host, graphs):
    """The three `graphs` run: "other_seed" for a client that announced supports_preview_metadata, as
    the current frontend does. Each: (result, seeds of its sampler calls, pack log).

    The run compared bit for bit ("on" / "off") must not be the process's first training: that one
    differs from later same-seed runs in the last bits whether or not it previews."""
    import comfy.sample

    transport = comfy_host._transport  # what a websocket client announced in its feature flags
    features = {"feature_flags": {"supports_preview_metadata": True}}
    logger = logging.getLogger("comfyui-perfusion")
    original, level = comfy.sample.sample, logger.level
    out = {}
    for name, prompt in graphs.items():
        calls, records = [], _Records()

        def counting(*args, _calls=calls, **kwargs):
            _calls.append(kwargs.get("seed"))
            return original(*args, **kwargs)

        comfy.sample.sample = counting
        logger.addHandler(records)
        logger.setLevel(logging.INFO)
        if name == "other_seed":
            transport.sockets_metadata[comfy_host.client_id] = features
        try:
            result = comfy_host.run(prompt).raise_for_error()
        finally:
            comfy.sample.sample = original
            logger.removeHandler(records)
            logger.setLevel(level)
            transport.sockets_metadata.pop(comfy_host.client_id, None)
        out[name] = (result, calls, records.messages)
    return out


def test_previews_at_step_0_and_every_n_steps_come_out_in_order(comfy_host, graphs, runs):
    result, calls, _ = runs["on"]
    g = graphs["on"]
    previews = comfy_host.images(result, node_id=previews_id(g))
    assert len(previews) == len(PREVIEW_STEPS) * len(PROMPTS)
    assert all(image.shape == (SIZE, SIZE, 3) for image in previews)
    # one sampling per (preview step, prompt), prompt k with seed k at every step; + the generation's
    assert calls[: len(previews)] == list(range(len(PROMPTS))) * len(PREVIEW_STEPS)
    assert len(calls) == len(previews) + 1
    (text,) = result.outputs[trainer(g).id]["text"]
    assert "previews at steps 0, 2, 4 (2 prompts each)" in text


def test_preview_images_reach_the_client_on_the_training_node(graphs, runs):
    result, *_ = runs["on"]
    shown = []
    for i, (event, data) in enumerate(result.messages):
        if event == UNENCODED_PREVIEW:
            progress = [d for e, d in result.messages[:i] if e == "progress"][-1]
            shown.append((progress["node"], progress["value"], progress["max"], data))
    assert [(node, value, total) for node, value, total, _ in shown] == [
        (trainer(graphs["on"]).id, step, STEPS) for step in PREVIEW_STEPS
    ]
    for *_, (kind, image, max_size) in shown:  # what server.send_image encodes for the websocket
        assert kind == "JPEG" and max_size and image.mode == "RGB"
        assert image.size == (len(PROMPTS) * SIZE + (len(PROMPTS) - 1) * 4, SIZE)  # the prompts side by side
    assert not preview_events(result, PREVIEW_WITH_METADATA)  # the harness client did not ask for it


def test_step_0_previews_do_not_depend_on_the_training_seed_and_later_ones_do(comfy_host, graphs, runs):
    a, b = (
        comfy_host.images(runs[name][0], node_id=previews_id(graphs[name])) for name in ("on", "other_seed")
    )
    n = len(PROMPTS)
    for k in range(n):  # step 0: the untrained concept, the same in both runs (up to PNG rounding)
        assert np.abs(a[k] - b[k]).max() <= 1.5 / 255
    last = slice(len(a) - n, len(a))
    assert all(np.abs(x - y).max() > 0.02 for x, y in zip(a[last], b[last]))
    assert all(np.abs(x - y).max() > 0.02 for x, y in zip(a[:n], a[last]))  # training changed them


def test_the_last_preview_is_what_generation_with_the_trained_concept_gives(comfy_host, graphs, runs):
    """Inference gate (0.70 / 0.15), the current embedding and V targets, same sampler and seed."""
    result, *_ = runs["on"]
    g = graphs["on"]
    previews = comfy_host.images(result, node_id=previews_id(g))
    (generated,) = comfy_host.images(result, node_id=preview_of(g, g.node("VAEDecode")[0]))
    last_first_prompt = previews[-len(PROMPTS)]
    assert np.abs(last_first_prompt - generated).max() <= 1.5 / 255  # 8-bit PNG rounding at most


def test_previews_off_cost_nothing_and_do_not_change_the_concept(comfy_host, graphs, runs):
    off, calls, _ = runs["off"]
    g = graphs["off"]
    assert calls == []  # no sampling at all
    assert not preview_events(off, UNENCODED_PREVIEW) and not preview_events(off, PREVIEW_WITH_METADATA)
    (placeholder,) = comfy_host.images(off, node_id=previews_id(g))  # one small black image
    assert placeholder.shape == (64, 64, 3) and placeholder.max() == 0
    assert "previews" not in off.outputs[trainer(g).id]["text"][0]
    # same seed with previews on: the same concept, bit for bit, and the same evaluation
    on, *_ = runs["on"]
    assert (
        on.outputs[trainer(graphs["on"]).id]["perfusion_eval"] == off.outputs[trainer(g).id]["perfusion_eval"]
    )
    folder = comfy_host.base_dir / "models" / "perfusion"
    a, b = load_concept(folder / "preview_on.safetensors"), load_concept(folder / "preview_off.safetensors")
    for name in ("token_embedding", "i_star", "u", "superclass_encoding"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert all(torch.equal(a.v_targets[k], b.v_targets[k]) for k in a.v_targets)


def test_clients_with_preview_metadata_get_the_node_id(graphs, runs):
    """The current frontend announces supports_preview_metadata; the executor then sends each preview
    with its node id (and main.py's hook does not send the old unencoded one)."""
    result, *_ = runs["other_seed"]
    sent = preview_events(result, PREVIEW_WITH_METADATA)
    assert [meta["node_id"] for _, meta in sent] == [trainer(graphs["other_seed"]).id] * len(PREVIEW_STEPS)
    assert all(image[0] == "JPEG" for image, _ in sent)
    assert not preview_events(result, UNENCODED_PREVIEW)


def test_the_log_reports_what_previews_cost(runs):
    *_, log_on = runs["on"]
    cost = [m for m in log_on if "previews took" in m]
    assert len(cost) == 1 and "6 images at 64 px, 2 sampler steps each" in cost[0], cost
    *_, log_off = runs["off"]
    assert not [m for m in log_off if "preview" in m]


def test_bad_validation_prompts_fail_before_training(comfy_host, tiny_ckpt_name, toy_images, sampler_calls):
    prompt = train_prompt(tiny_ckpt_name, toy_images["hugsy"], steps=50, extra=preview_settings())
    prompt.inputs(trainer(prompt))["validation_prompts"] = "  \n"
    result = comfy_host.run(prompt)
    assert result.error_kind == "execution" and "validation_prompts" in result.error_text
    progress = [d for d in result.events("progress") if d.get("node") == trainer(prompt).id]
    assert not progress and sampler_calls == []


def test_schedule_includes_step_0_and_the_last_and_stays_bounded(perfusion_pack):
    previews = perfusion_pack.nodes.previews
    assert previews.preview_schedule(4, 2) == ([0, 2, 4], 2)
    assert previews.preview_schedule(5, 2) == ([0, 2, 4, 5], 2)
    assert previews.preview_schedule(400, 100) == ([0, 100, 200, 300, 400], 100)
    assert previews.preview_schedule(400, 0) == ([], 0)
    points, interval = previews.preview_schedule(400, 1)  # widened to a multiple of the asked interval
    assert len(points) <= previews.MAX_POINTS and points[0] == 0 and points[-1] == 400
    assert interval == 27 and points[1] == 27
    assert previews.validation_prompts("a photo of {}\n\n {} and {} ", "hugsy") == (
        "a photo of hugsy",
        "hugsy and hugsy",
    )
    with pytest.raises(ValueError, match="at most 8"):
        previews.validation_prompts("\n".join(["{}"] * 9), "hugsy")


def test_previews_are_held_as_8_bit_images_while_training_runs(perfusion_pack):
    """A quarter of float32's memory per preview while the run goes on; the output has the values a
    saved image would (within half a level of what the sampler gave)."""
    previews = perfusion_pack.nodes.previews
    settings = previews.PreviewSettings(("a photo of hugsy",), every=1, size=8, steps=1, beta=0.7, tau=0.15)
    keeper = previews.TrainingPreviews(None, settings, total_steps=2)
    sampled = [torch.rand(1, 8, 8, 3, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    keeper.sample = lambda _run: sampled[len(keeper.images)]  # what the sampler gave at each step
    for step in range(3):
        keeper(step, None, None)
    assert [image.dtype for image in keeper.images] == [torch.uint8] * 3
    out = keeper.output()
    assert out.dtype == torch.float32 and (out - torch.cat(sampled)).abs().max() <= 0.5 / 255 + 1e-6
