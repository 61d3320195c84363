"""Faults: interrupted sampling and training, a server killed mid-save, a read-only or full concept folder.

In every case the host recovers (the next prompt works and gives the same pixels as before), no partial
concept file is ever visible, an existing file of the same name is intact, and errors name the file.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from harness.faults import FaultUnavailable, no_space, read_only, temp_files
from harness.perfusion_graphs import ConceptUse, generate_prompt, train_prompt
from harness.server import ComfyServer
from perfusion_core.concept_file import load_concept

SEEDS = (11, 23, 37)


def concept_folder(host) -> Path:
    return host.base_dir / "models" / "perfusion"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def assert_every_concept_loads(folder: Path) -> int:
    names = sorted(p for p in folder.glob("*.safetensors") if p.is_file())
    for path in names:
        load_concept(path)  # raises ConceptFileError on a partial or corrupt file
    return len(names)


def image(host, prompt) -> np.ndarray:
    (img,) = host.images(host.run(prompt).raise_for_error())
    return img


def interrupt_at(host, node: str, step: int):
    """on_message callback: interrupt once `node` reported progress `step`."""

    def on_message(event, data):
        if event == "progress" and str(data.get("node")) == node and data["value"] >= step:
            host.interrupt()

    return on_message


def loaded_params_have_no_grad_state(host) -> int:
    """No parameter of a model ComfyUI holds has a gradient; returns the count checked."""
    count = 0
    for loaded in host._mm.current_loaded_models:
        module = getattr(loaded.model, "model", None)
        if module is None:
            continue
        # ComfyUI leaves requires_grad=True on the parameters of the models it loads (harmless under the
        # executor's inference mode), so "no gradient state" means: no .grad anywhere.
        for name, param in module.named_parameters():
            assert param.grad is None, name
            count += 1
    return count


# ---- interruptions ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_sampling_interrupted_at_a_random_step_recovers(comfy_host, tiny_ckpt_name, trained_concepts, seed):
    steps = 10
    step = random.Random(seed).randrange(1, steps - 2)
    uses = [ConceptUse(trained_concepts["hugsy"], key_lock="global" if seed % 2 else "local")]
    quick = generate_prompt(tiny_ckpt_name, uses, positive="a photo of hugsy", seed=seed, steps=2)
    before = image(comfy_host, quick)
    long = generate_prompt(tiny_ckpt_name, uses, positive="a photo of hugsy", seed=seed + 1, steps=steps)
    sampler = long.node("KSampler").id
    result = comfy_host.run(long, on_message=interrupt_at(comfy_host, sampler, step))
    progress = [p["value"] for p in result.events("progress") if str(p["node"]) == sampler]
    print(f"seed {seed}: interrupt asked at step {step}/{steps}; sampler stopped after {max(progress)}")
    assert result.interrupted and not result.success, result.error_text
    assert result.error["node_type"] == "KSampler"
    assert max(progress) < steps
    comfy_host.reset_cache()
    np.testing.assert_array_equal(image(comfy_host, quick), before)


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_training_interrupted_at_a_random_step_leaves_nothing_behind(
    comfy_host, tiny_ckpt_name, trained_concepts, toy_images, seed
):
    folder = concept_folder(comfy_host)
    plain = generate_prompt(tiny_ckpt_name, positive="a photo of a teddy", seed=seed)
    before_image = image(comfy_host, plain)
    before_files = snapshot(folder)
    steps = 8
    step = random.Random(seed).randrange(2, steps - 1)
    prompt = train_prompt(
        tiny_ckpt_name, toy_images["hugsy"], word="hugsy", steps=steps, save_name=f"interrupted_{seed}"
    )
    trainer = prompt.node("PerfusionTrainConcept").id
    result = comfy_host.run(prompt, on_message=interrupt_at(comfy_host, trainer, step))
    print(f"seed {seed}: training interrupted at step {step}/{steps}: {result.error_kind}")
    assert result.interrupted, result.error_text
    assert result.error["node_type"] == "PerfusionTrainConcept"
    assert snapshot(folder) == before_files  # no new, partial or temp file; nothing rewritten
    frozen = loaded_params_have_no_grad_state(comfy_host)
    print(f"{frozen} parameters of the loaded models checked: frozen, no .grad")
    comfy_host.reset_cache()
    np.testing.assert_array_equal(image(comfy_host, plain), before_image)
    short = train_prompt(tiny_ckpt_name, toy_images["hugsy"], word="hugsy", steps=1, seed=seed)
    comfy_host.run(short).raise_for_error()  # the next training works


def test_training_interrupted_between_checkpoints_keeps_the_last_complete_one(
    comfy_host, tiny_ckpt_name, toy_images
):
    folder = concept_folder(comfy_host)
    step = random.Random(5).randrange(4, 9)
    extra = {"save_every": 2, "checkpoint_name": "faults_checkpointed"}
    prompt = train_prompt(
        tiny_ckpt_name, toy_images["zorbo"], word="zorbo", superclass="cat", steps=10, extra=extra
    )
    target = folder / "faults_checkpointed.safetensors"
    trainer = prompt.node("PerfusionTrainConcept").id
    try:
        result = comfy_host.run(prompt, on_message=interrupt_at(comfy_host, trainer, step))
        assert result.interrupted, result.error_text
        concept = load_concept(target)
        print(f"interrupted at step {step}: checkpoint holds {concept.info.steps} steps")
        assert concept.info.steps % 2 == 0 and 2 <= concept.info.steps <= step
        assert temp_files(folder) == []
    finally:
        target.unlink(missing_ok=True)


@pytest.mark.slow
def test_sampling_interrupted_over_http_recovers(comfy_server, tiny_ckpt_name):
    srv = comfy_server
    quick = generate_prompt(tiny_ckpt_name, positive="a photo of a dog", seed=4)
    before = srv.images(srv.run(quick, check=True))[0]
    for seed in SEEDS:
        step = random.Random(seed).randrange(1, 12)
        prompt_id = srv.queue(generate_prompt(tiny_ckpt_name, seed=seed, steps=16))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            seen = [m["data"]["value"] for m in srv.messages(prompt_id) if m["type"] == "progress"]
            if seen and max(seen) >= step:
                break
            time.sleep(0.005)
        srv.interrupt()
        result = srv.wait(prompt_id)
        print(f"seed {seed}: /interrupt after step {step}: {result.error_kind}")
        assert result.error_kind == "interrupted", result.error_text
        srv.free(unload_models=False, free_memory=True)
        after = srv.images(srv.run(quick, check=True))[0]
        np.testing.assert_array_equal(after, before)


# ---- a server killed while it writes checkpoints ---------------------------------------------------------


def _kill_during_save(srv: ComfyServer, folder: Path, timeout: float = 120.0) -> str:
    """SIGKILL the server the moment a temp file of the atomic save shows up (else after `timeout`)."""
    stale = set(temp_files(folder))  # left by an earlier kill
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(name.endswith(".tmp") and name not in stale for name in os.listdir(folder)):
            os.kill(srv.pid, signal.SIGKILL)
            return "while a temp file existed"
        if not srv.running:
            return "server exited by itself"
    os.kill(srv.pid, signal.SIGKILL)
    return "at the timeout"


@pytest.mark.slow
def test_server_killed_during_checkpoint_save_leaves_no_partial_concept(
    comfy_host, tiny_ckpt_name, trained_concepts, toy_images, tmp_path
):
    base = tmp_path / "killed"
    shutil.copytree(comfy_host.base_dir / "user" / "perfusion", base / "user" / "perfusion")  # C⁻¹ cache
    folder = base / "models" / "perfusion"
    folder.mkdir(parents=True)
    source = concept_folder(comfy_host)
    shutil.copy(source / trained_concepts["hugsy"], folder / "victim.safetensors")
    shutil.copy(source / trained_concepts["zorbo"], folder / "bystander.safetensors")
    bystander = (folder / "bystander.safetensors").read_bytes()
    images = toy_images["hugsy"]
    (base / "input").mkdir()
    for name in images:
        shutil.copy(comfy_host.base_dir / "input" / name, base / "input" / name)
    extra = {"save_every": 1, "checkpoint_name": "victim"}
    prompt = train_prompt(tiny_ckpt_name, images, word="hugsy", steps=400, extra=extra)

    outcomes = []
    for attempt in range(3):
        srv = ComfyServer(base, checkpoints=["tiny"]).start()
        try:
            srv.queue(prompt)
            outcomes.append(_kill_during_save(srv, folder))
            srv._proc.wait(10)
        finally:
            srv.stop()
        loaded = assert_every_concept_loads(folder)
        assert (folder / "bystander.safetensors").read_bytes() == bystander
        steps = load_concept(folder / "victim.safetensors").info.steps
        print(f"kill {attempt}: {outcomes[-1]}; {loaded} concept files load; victim at step {steps}")
    leftovers = temp_files(folder)
    print(f"temp files left by the kills: {leftovers}")
    assert all(not name.endswith(".safetensors") for name in leftovers)

    with ComfyServer(base, checkpoints=["tiny"]) as srv:
        listed = srv.object_info("PerfusionConceptLoader")["input"]["required"]["concept_name"][0]
        assert sorted(listed) == ["bystander.safetensors", "victim.safetensors"], listed
        use = [ConceptUse("victim.safetensors")]
        result = srv.run(generate_prompt(tiny_ckpt_name, use), check=True)
        assert srv.images(result)
    assert "while a temp file existed" in outcomes, outcomes


# ---- a concept folder that refuses writes ----------------------------------------------------------------

FAULTS = {"read_only": read_only, "no_space": no_space}


@pytest.mark.parametrize("writer", ["save_node", "checkpoint"])
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_unwritable_concept_folder_fails_clearly_and_recovers(
    comfy_host, tiny_ckpt_name, trained_concepts, toy_images, fault, writer
):
    folder = concept_folder(comfy_host)
    name = f"faults_{fault}_{writer}"
    victim = folder / f"{name}.safetensors"
    shutil.copy(folder / trained_concepts["hugsy"], victim)
    original = victim.read_bytes()
    if writer == "save_node":
        prompt = train_prompt(tiny_ckpt_name, toy_images["hugsy"], word="hugsy", steps=1, save_name=name)
        failing_node = "PerfusionSaveConcept"
    else:
        extra = {"save_every": 1, "checkpoint_name": name}
        prompt = train_prompt(tiny_ckpt_name, toy_images["hugsy"], word="hugsy", steps=2, extra=extra)
        failing_node = "PerfusionTrainConcept"
    try:
        try:
            with FAULTS[fault](folder) as how:
                result = comfy_host.run(prompt)
                inside = {p.name for p in folder.iterdir()}
                intact = victim.read_bytes() == original
        except FaultUnavailable as e:
            pytest.skip(str(e))
        message = (result.error or {}).get("exception_message", "")
        print(f"{fault} via {how}, {writer}: {result.error_kind}: {message.strip()}")
        assert result.error_kind == "execution", result.error_text
        assert result.error["node_type"] == failing_node
        assert intact
        assert not [n for n in inside if n.endswith(".tmp")], inside
        assert victim.read_bytes() == original
        assert temp_files(folder) == []
        comfy_host.run(prompt).raise_for_error()  # recovered: the same prompt now writes the file
        assert load_concept(victim).word == "hugsy"
        assert victim.name in message, f"the error does not name the file: {message!r}"
    finally:
        victim.unlink(missing_ok=True)
        comfy_host.folder_paths.filename_list_cache.pop("perfusion", None)
