"""A new user's ComfyUI has no models/perfusion folder: training, saving, listing and loading must
work there (a harness that pre-created the folder once hid that saving failed)."""

import shutil

import pytest

from harness.basedir import harness_test_nodes
from harness.perfusion_graphs import ConceptUse, generate_prompt, train_prompt
from harness.sample_images import write_toy_images
from harness.server import ComfyServer
from perfusion_core.concept_file import load_concept


@pytest.mark.slow
def test_a_stock_layout_trains_saves_lists_and_loads(comfy_host, tiny_ckpt_name, tmp_path):
    base = tmp_path / "fresh"
    with ComfyServer(base, checkpoints=["tiny"], custom_nodes=harness_test_nodes()) as server:
        folder = server.layout.perfusion
        assert not folder.exists()
        # C⁻¹ lives in the user folder, not models/: copy the session's cache to skip recomputing it
        cache = comfy_host.base_dir / "user" / "perfusion"
        if cache.is_dir():
            shutil.copytree(cache, server.layout.user / "perfusion", dirs_exist_ok=True)
        images = write_toy_images(server.layout.input, "fresh", 1)
        extra = {"save_every": 1, "checkpoint_name": "fresh_ckpt"}
        prompt = train_prompt(tiny_ckpt_name, images, steps=2, save_name="fresh", extra=extra)
        server.run(prompt, check=True)
        assert sorted(p.name for p in folder.iterdir()) == ["fresh.safetensors", "fresh_ckpt.safetensors"]
        assert load_concept(folder / "fresh.safetensors").info.steps == 2
        listed = server.object_info("PerfusionConceptLoader")["input"]["required"]
        assert "fresh.safetensors" in listed["concept_name"][0]
        prompt = generate_prompt(tiny_ckpt_name, [ConceptUse("fresh.safetensors")], steps=1)
        result = server.run(prompt)
        assert result.success, result.error_text
        assert len(server.images(result, node_id=prompt.node("SaveImage").id)) == 1
