"""The harness drives the real ComfyUI host: fixture checkpoints, in-process executor, HTTP server."""

from __future__ import annotations

import numpy as np
import pytest

from harness.basedir import PACK_DIR_NAME, prepare_base_dir
from harness.errors import HostError, HostStartError, PromptRejected
from harness.fixture_checkpoint import FixtureSpec, fixture_checkpoint, fixture_checkpoint_name
from harness.graph import Graph, Node
from harness.inprocess import ComfyHost
from harness.paths import ComfyUINotFoundError, comfyui_path, repo_root
from harness.perfusion_graphs import generate_prompt

pytest_plugins = ["harness.pytest_fixtures"]


def _attn2_layers(model) -> list[str]:
    return [n for n, _ in model.model.named_modules() if n.endswith(".attn2")]


def _load(host: ComfyHost, ckpt_name: str):
    return host.node_class("CheckpointLoaderSimple")().load_checkpoint(ckpt_name)


def _txt2img(ckpt_name: str, seed: int = 1) -> Graph:
    """Checkpoint -> CLIPTextEncode x2 -> EmptyLatentImage -> KSampler -> VAEDecode -> SaveImage."""
    return generate_prompt(
        ckpt_name, positive="a photo of a dog on the beach", seed=seed, filename_prefix="harness"
    )


def _one_node(class_type: str, **inputs) -> tuple[Graph, Node]:
    """A prompt of the one node ``class_type`` (a test node of harness.comfy_test_nodes)."""
    g = Graph()
    return g, g.add(class_type, **inputs)


# ---- paths and base dir (no ComfyUI) ------------------------------------------------------------------


def test_comfyui_path_prefers_env_then_repo_copy(monkeypatch, tmp_path):
    fake = tmp_path / "comfy"
    fake.mkdir()
    monkeypatch.setenv("COMFYUI_PATH", str(fake))  # no main.py: ignored
    assert comfyui_path() == repo_root() / ".comfyui" or (comfyui_path() / "main.py").is_file()
    (fake / "main.py").write_text("")
    assert comfyui_path() == fake.resolve()
    monkeypatch.delenv("COMFYUI_PATH")
    monkeypatch.setattr("harness.paths.repo_root", lambda: tmp_path / "nowhere")
    with pytest.raises(ComfyUINotFoundError, match="COMFYUI_PATH"):
        comfyui_path()


def test_prepare_base_dir_layout(tmp_path):
    node = tmp_path / "my_node.py"
    node.write_text("NODE_CLASS_MAPPINGS = {}\n")
    bd = prepare_base_dir(
        tmp_path / "base", checkpoints=["tiny"], load_pack=True, custom_nodes={"x.py": node}
    )
    assert bd.checkpoint_names == (fixture_checkpoint_name("tiny"),)
    assert (bd.checkpoints / bd.checkpoint_names[0]).is_file()
    assert (bd.custom_nodes / PACK_DIR_NAME).resolve() == repo_root()
    assert (bd.custom_nodes / "x.py").read_text() == node.read_text()
    for d in (bd.input, bd.output, bd.temp, bd.user):
        assert d.is_dir()
    assert not bd.perfusion.exists()  # a stock layout: the pack must create its folder when it saves
    bd = prepare_base_dir(tmp_path / "base", checkpoints=[], load_pack=False)  # idempotent; unlinks pack
    assert not (bd.custom_nodes / PACK_DIR_NAME).exists()


# ---- fixture checkpoints --------------------------------------------------------------------------------


def test_fixture_checkpoint_is_deterministic(tmp_path):
    a = fixture_checkpoint("tiny", tmp_path / "a")
    b = fixture_checkpoint("tiny", tmp_path / "b")
    assert a.name == b.name == fixture_checkpoint_name("tiny")
    assert a.stat().st_size < 8 * 2**20
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() == fixture_checkpoint("tiny").read_bytes()  # the shared cache, too


def test_fixture_names_and_spec_validation():
    assert fixture_checkpoint_name("tiny") != fixture_checkpoint_name("tiny", seed=1)
    assert "ctx1024" in fixture_checkpoint_name("tiny", context_dim=1024)
    with pytest.raises(ValueError, match="layout"):
        FixtureSpec("huge")
    with pytest.raises(ValueError, match="context_dim"):
        FixtureSpec("tiny", context_dim=512)


def test_tiny_fixture_is_detected_as_sd15(comfy_host, tiny_ckpt_name):
    model, clip, vae = _load(comfy_host, tiny_ckpt_name)[:3]
    assert type(model.model.model_config).__name__ == "SD15"
    layers = _attn2_layers(model)
    assert len(layers) == 3
    sd = model.model.state_dict()
    assert tuple(sd[f"{layers[0]}.to_k.weight"].shape) == (320, 768)
    assert clip is not None and vae is not None


@pytest.mark.slow
def test_fixture_variants(comfy_host):
    cases = [
        (FixtureSpec("two_level"), "SD15", 7, 768),
        (FixtureSpec("full"), "SD15", 16, 768),
        (FixtureSpec("tiny", seed=1), "SD15", 3, 768),
        (FixtureSpec("tiny", context_dim=1024), "SD20", 3, 1024),
    ]
    base_k = None
    for spec, family, n_layers, ctx in cases:
        model = _load(comfy_host, comfy_host.add_checkpoint(spec))[0]
        assert type(model.model.model_config).__name__ == family, spec
        layers = _attn2_layers(model)
        assert len(layers) == n_layers, spec
        k = model.model.state_dict()[f"{layers[0]}.to_k.weight"]
        assert k.shape[1] == ctx
        if spec.seed:
            base = _load(comfy_host, comfy_host.add_checkpoint("tiny"))[0].model.state_dict()
            base_k = base[f"{layers[0]}.to_k.weight"]
            assert base_k.shape == k.shape and not bool((base_k == k).all())  # same family, new weights
    comfy_host.unload_all()


# ---- in-process host -------------------------------------------------------------------------------------


def test_txt2img_in_process(comfy_host, tiny_ckpt_name):
    comfy_host.reset_cache()  # the session's host is shared: earlier tests may have cached the loader
    prompt = _txt2img(tiny_ckpt_name, seed=11)
    sampler, save = prompt.node("KSampler"), prompt.node("SaveImage")
    result = comfy_host.run(prompt)
    assert result.success, result.error_text
    (img,) = comfy_host.images(result, node_id=save.id)
    assert img.shape == (64, 64, 3) and img.dtype == np.float32
    assert np.isfinite(img).all() and 0.0 <= img.min() and img.max() <= 1.0 and img.std() > 0
    progress = result.events("progress")
    assert [(p["node"], p["value"], p["max"]) for p in progress] == [(sampler.id, 1, 2), (sampler.id, 2, 2)]
    assert result.executed_nodes[-1] == save.id and set(result.executed_nodes) == set(prompt)
    assert result.events("executing")[-1] == {"node": None, "prompt_id": result.prompt_id}


def test_same_seed_same_image_in_process(comfy_host, tiny_ckpt_name):
    prompt = _txt2img(tiny_ckpt_name, seed=1)
    r1 = comfy_host.run(prompt, check=True)
    r2 = comfy_host.run(_txt2img(tiny_ckpt_name, seed=2), check=True)
    r3 = comfy_host.run(_txt2img(tiny_ckpt_name, seed=1), check=True)
    ckpt, sampler = prompt.node("CheckpointLoaderSimple"), prompt.node("KSampler")
    assert ckpt.id in r3.cached_nodes and sampler.id not in r3.cached_nodes  # the sampler really ran again
    (a,), (b,), (c,) = comfy_host.images(r1), comfy_host.images(r2), comfy_host.images(r3)
    assert np.array_equal(a, c)
    assert not np.array_equal(a, b)


def test_validation_error_is_a_result(comfy_host):
    prompt = _txt2img("no-such-model.ckpt")
    ckpt = prompt.node("CheckpointLoaderSimple")
    result = comfy_host.run(prompt)
    assert not result.success and result.error_kind == "validation"
    assert result.error["error"]["type"] == "prompt_outputs_failed_validation"
    (reason,) = result.node_errors[ckpt.id]["errors"]
    assert reason["type"] == "value_not_in_list" and reason["extra_info"]["input_name"] == "ckpt_name"
    assert "no-such-model.ckpt" in result.error_text and "CheckpointLoaderSimple" in result.error_text
    ok, error, node_errors = comfy_host.validate(prompt)
    assert not ok and error["type"] == "prompt_outputs_failed_validation" and ckpt.id in node_errors
    assert prompt.inputs(ckpt)["ckpt_name"] == "no-such-model.ckpt"  # caller's dict untouched


def test_execution_error_is_a_result(comfy_host):
    prompt, node = _one_node("HarnessRaise", message="boom 42", seed=0)
    result = comfy_host.run(prompt)
    assert not result.success and result.error_kind == "execution"
    assert result.error["exception_type"] == "RuntimeError"
    assert result.error["exception_message"].strip() == "boom 42"
    assert result.error["node_id"] == node.id and result.error["node_type"] == "HarnessRaise"
    assert "boom 42" in result.error_text and "Traceback" not in result.error_text.splitlines()[0]
    with pytest.raises(HostError, match="boom 42"):
        comfy_host.run(prompt, check=True)


def test_interrupt_from_progress_callback(comfy_host):
    seen = []

    def on_message(event, data):
        seen.append(event)
        if event == "progress" and data["value"] >= 2:
            comfy_host.interrupt()

    prompt, _ = _one_node("HarnessProgress", steps=500, delay=0.001, seed=7)
    result = comfy_host.run(prompt, on_message=on_message)
    assert result.interrupted and not result.success
    assert result.error["node_type"] == "HarnessProgress"
    assert 2 <= len(result.events("progress")) < 500
    assert "progress" in seen
    prompt, node = _one_node("HarnessProgress", steps=3, delay=0.0, seed=8)
    ok = comfy_host.run(prompt)
    assert ok.success and ok.outputs[node.id] == {"steps": [3]}  # the flag does not leak into the next run


def test_host_is_a_singleton(comfy_host, tmp_path):
    assert ComfyHost.get() is comfy_host
    assert ComfyHost.get(comfy_host.base_dir) is comfy_host
    with pytest.raises(HostStartError, match="already runs"):
        ComfyHost.get(tmp_path)
    assert comfy_host.folder("checkpoints")[0] == comfy_host.base_dir / "models" / "checkpoints"
    assert "KSampler" in comfy_host.node_names and "HarnessRaise" in comfy_host.node_names


# ---- ComfyUI's own server over HTTP + websocket ---------------------------------------------------------


@pytest.mark.slow
def test_server_end_to_end(comfy_server, comfy_host, tiny_ckpt_name, sdxl_ckpt_name):
    srv = comfy_server
    info = srv.object_info()
    assert "KSampler" in info and "HarnessRaise" in info
    listed = srv.object_info("CheckpointLoaderSimple")["input"]["required"]["ckpt_name"][0]
    assert sorted(listed) == sorted([tiny_ckpt_name, sdxl_ckpt_name])
    assert "<html" in srv._get("/").text.lower()  # the bundled frontend is served

    prompt = _txt2img(tiny_ckpt_name, seed=3)
    result = srv.run(prompt)
    assert result.success, result.error_text
    history, messages = result
    assert [(p["value"], p["max"]) for p in result.events("progress")] == [(1, 2), (2, 2)]
    assert {"execution_start", "executing", "executed", "execution_success"} <= {m["type"] for m in messages}
    (item,) = history["outputs"][prompt.node("SaveImage").id]["images"]
    png = srv.view(item["filename"], item["subfolder"], item["type"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    (img,) = srv.images(history)
    local = comfy_host.run(_txt2img(tiny_ckpt_name, seed=3), check=True)
    assert np.array_equal(img, comfy_host.images(local)[0])  # same pixels over HTTP and in-process

    missing = _txt2img("no-such-model.ckpt")
    with pytest.raises(PromptRejected) as exc:
        srv.queue(missing)
    ckpt = missing.node("CheckpointLoaderSimple")
    assert exc.value.body["node_errors"][ckpt.id]["errors"][0]["type"] == "value_not_in_list"

    raising, _ = _one_node("HarnessRaise", message="http boom", seed=1)
    progressing, progress = _one_node("HarnessProgress", steps=2, delay=0.0, seed=1)
    failed, ok = srv.run_many([raising, progressing])
    assert failed.error_kind == "execution" and failed.error["exception_message"].strip() == "http boom"
    assert ok.success and ok.outputs[progress.id] == {"steps": [2]}
    srv.free()
    assert srv.running and srv.pid
