"""The bias chooser's toy-world validation (benchmarks/choose_bias.py), without sampling: the
stand-in image embedder and both curves, on clean renders whose answers are known."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmarks.choose_bias import SCENE_SETS, main, parse_grid, proxy_curve, summarise, symbolic_curve
from perfusion_core.operating_point import choose_bias
from toyworld import embedder, world
from toyworld.recipe import BIAS_SWEEP

ZORP = world.CONCEPTS["zorp"]
GRID = (0.4, 0.5, 0.6)


def _floats(*scenes: world.Scene) -> list[np.ndarray]:
    return [world.render(s).astype(np.float32) / 255 for s in scenes]


def _halves(image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    e = embedder.embed(torch.from_numpy(image)[None])[0]
    return e[: embedder.BINS**3], e[embedder.BINS**3 :]


def test_embedder_tells_what_is_drawn_apart_from_where_and_on_what():
    here = world.Scene("cyan", (ZORP.at("left"),))
    trained = world.Scene("white", (ZORP.at("centre"),))
    other = world.Scene("cyan", (world.thing("red", "ball", "left"),))
    (what_here, where_here), (what_trained, where_trained), (what_other, where_other) = (
        _halves(img) for img in _floats(here, trained, other)
    )
    assert F.cosine_similarity(what_here, what_trained, dim=0) > 0.99  # same object, moved
    assert F.cosine_similarity(what_here, what_other, dim=0) < 0.01  # another colour, same place
    assert F.cosine_similarity(where_here, where_other, dim=0) > F.cosine_similarity(
        where_here, where_trained, dim=0
    )
    assert torch.allclose(embedder.embed(torch.ones(2, 72, 72, 3))[:, : embedder.BINS**3], torch.zeros(1))


def test_both_curves_choose_on_renders_whose_answer_is_known():
    """Bias 0.4 draws the training photo (the concept, but not where the prompt says), 0.5 the
    concept as prompted, 0.6 the superclass's own object: the rule's answer is 0.5 on both curves."""
    scene = world.Scene("cyan", (ZORP.at("left"),))
    superclass = _floats(world.Scene("cyan", (world.thing("red", "ball", "left"),)))
    rows = [
        _floats(world.Scene("white", (ZORP.at("centre"),))),
        _floats(scene),
        superclass,
    ]
    truth = symbolic_curve(GRID, rows, superclass, scene, ZORP)
    assert [(p.fidelity, p.alignment) for p in truth.points] == [(1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
    assert truth.superclass_fidelity == 0.0 and choose_bias(truth).bias == 0.5
    proxy = proxy_curve(GRID, rows, superclass, [img for img, _ in world.concept_photos(ZORP)])
    fidelity = [p.fidelity for p in proxy.points]
    alignment = [p.alignment for p in proxy.points]
    assert fidelity[0] > fidelity[1] > fidelity[2] == proxy.superclass_fidelity
    assert alignment[2] > alignment[1] > alignment[0]
    # the earlier rule follows the proxy's fidelity to the copy of the training photo; the knee does not
    result = {
        "truth": [vars(p) for p in truth.points],
        "truth_superclass_fidelity": truth.superclass_fidelity,
        "proxy": [vars(p) for p in proxy.points],
        "proxy_superclass_fidelity": proxy.superclass_fidelity,
    }
    summary = summarise({}, [result, result])
    assert summary["concepts"][0]["fidelity_share"] == {
        "true_bias": 0.5,
        "chosen_bias": 0.4,
        "within_one_step": True,
    }
    assert summary["concepts"][0]["knee"] == {
        "true_bias": 0.5,
        "chosen_bias": 0.5,
        "within_one_step": True,
    }
    assert summary["within_one_step_knee"] == "2 of 2" and summary["points"] == 6
    assert summary["rho_alignment"] == 0.866  # the scorer ties 0.5 and 0.6; the proxy orders them


def test_report_rescores_saved_curves(tmp_path, capsys):
    point = {"bias": 0.4, "fidelity": 1.0, "alignment": 0.0}
    far = {"bias": 0.6, "fidelity": 1.0, "alignment": 1.0}
    result = {"concept": vars(ZORP), "prompt": "p", "truth_superclass_fidelity": 0.0}
    result |= {"truth": [point, {**point, "bias": 0.5}, far], "proxy_superclass_fidelity": 0.0}
    result["proxy"] = [{**point, "alignment": 1.0}, {**point, "bias": 0.5}, {**far, "alignment": 0.0}]
    out = tmp_path / "choose_bias.json"
    out.write_text(json.dumps({"machine": "m", "within_one_step": "stale", "concepts": [result]}))
    assert main(["--report", "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["machine"] == "m" and "within_one_step" not in saved
    assert saved["rho_fidelity"] is None  # the scorer's fidelity is 1 everywhere: nothing to rank
    assert saved["concepts"][0]["fidelity_share"] == {
        "true_bias": 0.6,
        "chosen_bias": 0.4,
        "within_one_step": False,
    }
    assert (
        "| zorp (brown, superclass cherry) | p | fidelity_share | 0.6 | 0.4 | no |" in capsys.readouterr().out
    )


def test_every_concept_has_a_prompt_away_from_its_training_photos():
    assert {(c.colour, c.shape) for c in world.CONCEPTS.values()} == {
        (colour, shape) for colour in world.CONCEPT_COLOURS for shape in world.SHAPES
    }
    trained = set(world.PHOTO_PLACES)
    validation, confirmation = SCENE_SETS["validation"], SCENE_SETS["confirmation"]
    assert set(validation) == set(confirmation) == set(world.CONCEPTS)
    for scenes in (validation, confirmation):
        assert all(place not in trained and bg != "white" for place, bg in scenes.values())
    # the confirmation prompts are new to every concept: another place and another background
    assert all(validation[w][0] != confirmation[w][0] for w in validation)
    assert all(validation[w][1] != confirmation[w][1] for w in validation)


def test_grid_option_names_the_grid_or_says_what_is_wrong():
    assert parse_grid("0.3,1.1,0.2") == BIAS_SWEEP
    for bad, why in (("0.4,0.9", "LOW,HIGH,STEP"), ("0.9,0.4,0.1", "bias_max"), ("a,b,c", "LOW,HIGH,STEP")):
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            parse_grid(bad)
