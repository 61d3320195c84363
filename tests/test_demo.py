"""`make demo` end to end: `python -m scripts.demo --quick` in its own process (it starts its own
in-process host)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from perfusion_core.concept_file import read_concept_metadata

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_quick_writes_toyworld_images_and_concepts(tmp_path):
    """The default demo (the toy world) from its own process: every image and concept file is written."""
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.demo", "--quick", "--output", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={**os.environ, "PERFUSION_CHECKPOINT": ""},  # the toy world, whatever the caller set
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "toy world: a tiny SD1.5-layout model" in proc.stdout
    assert "train zorp (cherry, 5 images) 4/4" in proc.stdout  # a progress line per training step

    rows = {  # file -> tiles in the row
        "toyworld_photos.png": 10,
        "toyworld_previews_zorp.png": 4,
        "toyworld_previews_quib.png": 4,
        "toyworld_places.png": 6,
        "toyworld_bias_sweep.png": 4,  # no concept + every second bias of BIAS_SWEEP
        "toyworld_two_concepts.png": 3,
    }
    for name, tiles in rows.items():
        with Image.open(out / name) as im:
            im.verify()
        with Image.open(out / name) as im:
            assert im.width > tiles * 512, name  # each image at least 512 px wide
    for word, superclass in (("zorp", "cherry"), ("quib", "brick")):
        info = read_concept_metadata(out / "demo-run" / "models" / "perfusion" / f"{word}.safetensors")
        assert (info.word, info.info.superclass, info.info.steps) == (word, superclass, 4)


def test_demo_rejects_a_missing_checkpoint(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts.demo",
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
