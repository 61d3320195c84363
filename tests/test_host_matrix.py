"""The host compatibility subset: what a user does with the pack, through the real ComfyUI server
(main.py over HTTP + websocket), small enough to run on every supported host (`make test-hosts`).

One server per module on a stock base directory (no models/perfusion): the pack loads, two concepts
are trained apart and saved there, then the loader applies them alone, chained, under a LoRA placed
before or after them, and in a bias sweep queued all at once.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import safetensors.torch
import torch

from harness.basedir import PACK_DIR_NAME
from harness.fixture_checkpoint import fixture_checkpoint
from harness.graph import Graph
from harness.perfusion_graphs import ConceptUse, generate_prompt, train_prompt, with_model_patch
from harness.sample_images import write_toy_images
from harness.server import ComfyServer
from perfusion_core.concept_file import load_concept

pytestmark = pytest.mark.hosts

PACK_NODES = (
    "PerfusionTrainConcept",
    "PerfusionSaveConcept",
    "PerfusionConceptLoader",
    "PerfusionApplyConcept",
    "PerfusionConceptFile",
    "PerfusionExportConcept",
    "PerfusionGateMap",
    "PerfusionChooseBias",
)
TRAIN_STEPS = 3
CONCEPTS = {  # word -> (superclass, toy colour)
    "hugsy": ("teddy", (160, 100, 50)),
    "zorbo": ("cat", (40, 120, 200)),
}
SIZE = 64
BIASES = (0.3, 0.5, 0.7, 0.9)


def write_lora(path, ckpt_path) -> None:
    """A random rank-4 LoRA (generic ``diffusion_model.<layer>`` keys) on every cross-attention K/V
    and self-attention Q of the fixture checkpoint, read from the file itself."""
    sd = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    sd = sd.get("state_dict", sd)
    g = torch.Generator().manual_seed(0)
    lora = {}
    for key in sorted(sd):
        if not key.startswith("model.diffusion_model.") or not key.endswith(
            ("attn2.to_k.weight", "attn2.to_v.weight", "attn1.to_q.weight")
        ):
            continue
        proj, (rows, cols) = key[len("model.") : -len(".weight")], sd[key].shape
        lora[f"{proj}.lora_up.weight"] = torch.randn(rows, 4, generator=g) * 0.2
        lora[f"{proj}.lora_down.weight"] = torch.randn(4, cols, generator=g) * 0.2
    assert len(lora) == 18, sorted(lora)  # 3 attn2 layers x (to_k, to_v, attn1.to_q) x (up, down)
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(lora, str(path))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("host-matrix")
    srv = ComfyServer(base, checkpoints=["tiny"])
    assert not srv.layout.perfusion.exists(), "the base directory must be stock (no models/perfusion)"
    write_lora(base / "models" / "loras" / "matrix_lora.safetensors", fixture_checkpoint("tiny"))
    with srv:
        yield srv


@pytest.fixture(scope="module")
def ckpt(server) -> str:
    (name,) = server.layout.checkpoint_names
    return name


@pytest.fixture(scope="module")
def trained(server, ckpt) -> dict:
    """Both concepts trained apart and saved on the fresh install: word -> (file, ServerResult, the
    training prompt).
    Whether models/perfusion existed before the first save is kept under the key "folder_before"."""
    out = {"folder_before": server.layout.perfusion.exists()}
    for word, (superclass, colour) in CONCEPTS.items():
        images = write_toy_images(server.layout.input, word, 2, colour=colour)
        prompt = train_prompt(
            ckpt,
            images,
            word=word,
            superclass=superclass,
            steps=TRAIN_STEPS,
            lr_v=0.3,
            lr_embedding=0.02,
            covariance_prompts=64,
            save_name=f"matrix_{word}",
        )
        out[word] = (f"matrix_{word}.safetensors", server.run(prompt, timeout=900), prompt)
    return out


def concept_file(trained, word: str) -> str:
    name, result, _ = trained[word]
    if not result.success:
        pytest.fail(f"training {word} failed: {result.error_text}")
    return name


def generate(server, prompt: Graph) -> np.ndarray:
    result = server.run(prompt)
    assert result.success, result.error_text
    (image,) = server.images(result, node_id=prompt.node("SaveImage").id)
    assert image.shape == (SIZE, SIZE, 3) and np.isfinite(image).all()
    return image


@pytest.fixture(scope="module")
def images(server, ckpt, trained) -> dict[str, np.ndarray]:
    """Plain and single-concept images of the same prompt and seed (bias 0.7)."""
    hugsy = concept_file(trained, "hugsy")
    text = "a photo of hugsy on the beach"
    return {
        "plain": generate(server, generate_prompt(ckpt, positive=text, size=SIZE)),
        "hugsy": generate(server, generate_prompt(ckpt, [ConceptUse(hugsy)], positive=text, size=SIZE)),
    }


def differ(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def test_the_pack_loads_with_its_five_nodes(server):
    info = server.object_info()
    missing = [n for n in PACK_NODES if n not in info]
    assert not missing, f"not registered: {missing}\n{server.log_text(80)}"
    log = server.log_text()
    failures = [
        line
        for line in log.splitlines()
        if PACK_DIR_NAME in line and re.search(r"IMPORT FAILED|Cannot import|Traceback", line)
    ]
    assert not failures, "\n".join(failures) + "\n" + server.log_text(80)
    assert re.search(rf"seconds: \S*{PACK_DIR_NAME}\s*$", log, re.M), (
        "the pack is not in the host's import times\n" + server.log_text(80)
    )


def test_trains_and_saves_on_a_fresh_install(server, trained):
    assert trained["folder_before"] is False, "models/perfusion existed before the first save"
    listed = server.object_info("PerfusionConceptLoader")["input"]["required"]["concept_name"][0]
    for word in CONCEPTS:
        name, result, prompt = trained[word]
        assert result.success, f"training {word}: {result.error_text}"
        path = server.layout.perfusion / name
        assert path.is_file(), sorted(p.name for p in server.layout.perfusion.glob("*"))
        assert load_concept(path).info.steps == TRAIN_STEPS
        assert name in listed, listed
        assert server.images(result, node_id=prompt.node("PreviewImage").id), "the loss curve preview"


def test_the_loader_applies_the_saved_concept(images):
    assert differ(images["hugsy"], images["plain"]) > 1e-3, "the concept does not change the image"


def test_two_concepts_trained_apart_chain(server, ckpt, trained):
    hugsy, zorbo = concept_file(trained, "hugsy"), concept_file(trained, "zorbo")
    text = "hugsy and zorbo in a field"
    chained = generate(
        server, generate_prompt(ckpt, [ConceptUse(hugsy), ConceptUse(zorbo)], positive=text, size=SIZE)
    )
    alone = {
        word: generate(server, generate_prompt(ckpt, [ConceptUse(f)], positive=text, size=SIZE))
        for word, f in (("hugsy", hugsy), ("zorbo", zorbo))
    }
    plain = generate(server, generate_prompt(ckpt, positive=text, size=SIZE))
    for word, image in alone.items():
        assert differ(image, plain) > 1e-3, f"{word} alone does not change the image"
        assert differ(chained, image) > 1e-3, f"the chain is {word} alone: the other concept has no effect"


def with_lora(prompt: Graph, after_concepts: bool) -> Graph:
    """A LoraLoader (model and clip) before the first or after the last concept loader."""
    inputs = {"lora_name": "matrix_lora.safetensors", "strength_model": 1.0, "strength_clip": 1.0}
    return with_model_patch(prompt, "LoraLoader", inputs, after_concepts=after_concepts, patches_clip=True)


def test_a_lora_before_or_after_the_concept_gives_the_same_image(server, ckpt, trained, images):
    prompt = generate_prompt(
        ckpt, [ConceptUse(concept_file(trained, "hugsy"))], positive="a photo of hugsy on the beach"
    )
    before = generate(server, with_lora(prompt, after_concepts=False))
    after = generate(server, with_lora(prompt, after_concepts=True))
    np.testing.assert_allclose(before, after, atol=2 / 255)
    assert differ(before, images["hugsy"]) > 1e-3, "the LoRA is not in force under the concept"


def test_a_bias_sweep_queued_at_once_gives_distinct_images(server, ckpt, trained, images):
    hugsy = concept_file(trained, "hugsy")
    prompts = [
        generate_prompt(
            ckpt,
            [ConceptUse(hugsy, bias=bias)],
            positive="a photo of hugsy on the beach",
            size=SIZE,
            filename_prefix=f"sweep/bias{bias:.1f}",
        )
        for bias in BIASES
    ]
    results = server.run_many(prompts, timeout=600)
    failed = [(bias, r.error_text) for bias, r in zip(BIASES, results) if not r.success]
    assert not failed, failed
    assert len({r.prompt_id for r in results}) == len(BIASES)
    sweep = {}
    for bias, prompt, result in zip(BIASES, prompts, results):
        save = prompt.node("SaveImage")
        (item,) = result.outputs[save.id]["images"]
        assert item["filename"].startswith(f"bias{bias:.1f}"), item
        (sweep[bias],) = server.images(result, node_id=save.id)
    for i, a in enumerate(BIASES):
        for b in BIASES[i + 1 :]:
            assert not np.array_equal(sweep[a], sweep[b]), f"bias {a} and {b} give the same image"
    # the queued run at the default bias is the image the same prompt gave alone
    np.testing.assert_array_equal(sweep[0.7], images["hugsy"])


def test_a_bias_schedule_moves_the_bias_over_sampling(server, ckpt, trained, images):
    """The schedule's progress comes from the host's APPLY_MODEL wrapper and model sampling."""
    hugsy = concept_file(trained, "hugsy")

    def at(bias: float, bias_end: float | None = None) -> np.ndarray:
        use = ConceptUse(hugsy, bias=bias, bias_end=bias_end)
        return generate(
            server, generate_prompt(ckpt, [use], positive="a photo of hugsy on the beach", size=SIZE)
        )

    # without the wrapper the progress stays 0 and the image is bias 0.3's bit for bit (a 3-step concept
    # moves images little, so the bias sweep's criterion: any difference)
    scheduled = at(0.3, 0.9)
    assert not np.array_equal(scheduled, at(0.3)) and not np.array_equal(scheduled, at(0.9))
    np.testing.assert_array_equal(at(0.7, 0.7), images["hugsy"])
