"""The GPU check script runs end to end (on this CPU, in its --quick form), so it is ready when a
GPU machine is lent: it must not be first run on borrowed time."""

import json
import subprocess
import sys

import pytest

from harness.paths import repo_root


@pytest.mark.slow
def test_gpu_check_quick_runs_and_reports(tmp_path):
    out = tmp_path / "gpu_check.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--quick", "--out", str(out)],
        cwd=repo_root(),
        check=True,
        timeout=1200,
    )
    report = json.loads(out.read_text())
    tensors = report["gradients"]["tensors"]
    assert "token_embedding" in tensors and len(tensors) == 4  # the embedding + 3 V targets (tiny)
    assert all(row["cosine"] > 0.999 for row in tensors.values())  # fp32 vs fp32 on a CPU
    training = report["training"]
    assert training["precision"] == "fp32" and training["step_s"] > 0
    assert [row["concepts"] for row in report["sampling"]] == [0, 1, 4]
