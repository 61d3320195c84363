"""`make demo` end to end: scripts/demo.py --quick in its own process (it starts its own in-process host)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from perfusion_core.concept_file import read_concept_metadata

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_quick_writes_images_and_concepts(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--quick", "--output", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "PERFUSION_CHECKPOINT": ""},  # the fixture, whatever the caller set
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "random weights: images are abstract" in proc.stdout
    assert "train hugsy (teddy, 5 images) 4/4" in proc.stdout  # a progress line per training step

    images = {
        "hugsy_no_concept.png": 64,
        "hugsy_bias_0.40.png": 64,
        "hugsy_bias_0.80.png": 64,
        "hugsy_and_zorbo.png": 64,
        "loss_hugsy.png": None,
        "loss_zorbo.png": None,
        "hugsy_bias_sweep.png": None,
    }
    for name, side in images.items():
        with Image.open(out / name) as im:
            im.verify()
        with Image.open(out / name) as im:
            if side is not None:
                assert im.size == (side, side), name
    with Image.open(out / "hugsy_bias_sweep.png") as grid:
        assert grid.width > 3 * 256  # three labelled tiles: no concept, bias 0.40, bias 0.80
    for word in ("hugsy", "zorbo"):
        info = read_concept_metadata(out / "concepts" / f"{word}.safetensors")
        assert (info.word, info.info.steps) == (word, 4)


def test_demo_rejects_a_missing_checkpoint(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "demo.py"),
            "--checkpoint",
            str(tmp_path / "nope.safetensors"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "nope.safetensors does not exist" in proc.stderr
