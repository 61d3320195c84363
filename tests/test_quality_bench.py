"""The quality benchmark's scoring, merging and LoRA graph (benchmarks/quality.py), without sampling:
its numbers are only as good as these (the measuring itself is ``make bench-quality``)."""

from __future__ import annotations

import json

import pytest

from benchmarks.quality import as_superclass, eval_scenes, judge, pair_scenes, rates, report
from benchmarks.train_worker import lora_prompt
from toyworld import world

ZORP, QUIB = world.CONCEPTS["zorp"], world.CONCEPTS["quib"]


def test_prompts_move_the_concept_and_name_each_of_a_pair_first_as_often():
    scenes = eval_scenes(ZORP)
    assert len(scenes) == 12
    assert all(not (t.name == "zorp" and t.position == "centre") for s in scenes for t in s.things)
    pairs = pair_scenes(ZORP, QUIB)
    assert len(pairs) == 12 and len({s.caption for s in pairs}) == 12
    assert sum(s.things[0].name == "zorp" for s in pairs) == 6
    assert (
        as_superclass(scenes[8]).caption
        == "top empty, left cherry, centre empty, right cheese, bottom empty, gray background"
    )


def test_judge_reads_the_concept_its_place_and_the_rest_of_the_prompt():
    scene = eval_scenes(ZORP)[8]  # zorp on the left, a yellow block on the right, gray
    assert all(judge(world.render(scene), scene, [ZORP]).values())
    moved = world.Scene("gray", (ZORP.at("top"), world.thing("yellow", "block", "right")))
    row = judge(world.render(moved), scene, [ZORP])
    assert row["fidelity"] and row["other_objects"] and row["background"]
    assert not (row["in_place"] or row["positions"] or row["alignment"])
    wrong_shape = world.Scene("gray", (world.Thing("x", "brown", "block", "left"), scene.things[1]))
    row = judge(world.render(wrong_shape), scene, [ZORP])
    assert not row["fidelity"] and not row["in_place"] and row["alignment"]
    pair = pair_scenes(ZORP, QUIB)[0]
    assert judge(world.render(pair), pair, [ZORP, QUIB])["in_place"]


def test_rates_carry_binomial_standard_errors():
    r = rates([{"fidelity": True}, {"fidelity": True}, {"fidelity": True}, {"fidelity": False}])
    assert r == {"fidelity": 0.75, "fidelity_se": pytest.approx(0.2165, abs=1e-4), "samples": 4}


def _part(tmp_path, name: str, checkpoint: str) -> None:
    row = {"part": name, "method": name, "sweep": "bias", "setting": 0.7}
    row |= rates(
        [
            dict.fromkeys(
                ("fidelity", "in_place", "alignment", "background", "positions", "other_objects"), True
            )
        ]
    )
    (tmp_path / "quality").mkdir(exist_ok=True)
    (tmp_path / "quality" / f"{name}.json").write_text(json.dumps({"checkpoint": checkpoint, "arms": [row]}))


def test_report_merges_parts_of_one_checkpoint_and_refuses_mixed_ones(tmp_path):
    _part(tmp_path, "perfusion", "a.ckpt")
    _part(tmp_path, "pairs", "a.ckpt")
    table = report(tmp_path)
    assert "| perfusion | perfusion | bias 0.7 | 1.00 ± 0.00 |" in table
    merged = json.loads((tmp_path / "quality.json").read_text())
    assert [a["part"] for a in merged["arms"]] == ["perfusion", "pairs"]
    assert merged["missing_parts"] == [
        "unlocked",
        "baselines",
        "photos",
        "steps",
        "schedule",
        "export",
        "word",
    ]
    assert (tmp_path / "quality.png").stat().st_size > 0
    _part(tmp_path, "photos", "b.ckpt")
    with pytest.raises(SystemExit, match="different weights"):
        report(tmp_path)


def test_lora_prompt_takes_the_hosts_lora_output_and_input_defaults():
    class Trainer:  # what ComfyUI 0.33's TrainLoraNode declares, in part
        RETURN_TYPES = ("LORA_MODEL", "LOSS_MAP", "INT")

        @staticmethod
        def INPUT_TYPES():
            return {
                "required": {"rank": ("INT", {"default": 8}), "bypass_mode": ("BOOLEAN", {"default": False})}
            }

    prompt = lora_prompt("m.ckpt", 4, 64, "fp32", False, rank=2, trainer=Trainer)
    train = prompt.node("TrainLoraNode")
    assert prompt.inputs("SaveLoRA")["lora"] == train[0]
    assert prompt.inputs(train)["bypass_mode"] is False and prompt.inputs(train)["rank"] == 2
    default = lora_prompt("m.ckpt", 4, 64, "fp32", False)
    assert default.inputs("SaveLoRA")["lora"] == default.node("TrainLoraNode")[1]


def test_lora_prompt_validates_on_the_host(comfy_host, tiny_ckpt_name):
    from harness.sample_images import write_toy_images

    names = write_toy_images(comfy_host.base_dir / "input", "quality_bench", 2)
    trainer = comfy_host.node_class("TrainLoraNode")
    ok, error, node_errors = comfy_host.validate(
        lora_prompt(tiny_ckpt_name, 4, 64, "fp32", False, images=names, trainer=trainer)
    )
    assert ok, (error, node_errors)
