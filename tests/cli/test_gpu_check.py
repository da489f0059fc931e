"""``scripts/gpu_check.sh --cpu``: the GPU check's CPU half (tiny sizes) runs its sections green and
writes its markdown and JSON; a GPU machine runs the same script at paper scale."""

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers.paths import REPO_ROOT


@pytest.mark.slow
def test_gpu_check_cpu_dry_run(tmp_path):
    r = subprocess.run(["bash", str(Path(REPO_ROOT) / "scripts" / "gpu_check.sh"), "--cpu", "--out", str(tmp_path),
                        "--skip", "lightning"], capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "<!-- gpu_check begin -->" in r.stdout and "<!-- gpu_check end -->" in r.stdout
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [s["name"].split(" ")[0] for s in report["sections"]] == ["gpu", "train", "per-frame"]
    assert all(s["ok"] for s in report["sections"])
    steps = report["sections"][1]["rows"]
    assert {(r["model"], r["precision"]) for r in steps} == {
        (m, p) for m in ("waymo_lstm", "waymo_concat", "waymo_single_frame") for p in ("32-true", "bf16-mixed")}
    assert all(abs(r["loss_vs_fp32"]) < 0.02 for r in steps)
    assert (tmp_path / "gpu_check.md").read_text().startswith("GPU check")


def test_gpu_check_without_cuda_says_so():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine runs the real check")
    r = subprocess.run(["bash", str(Path(REPO_ROOT) / "scripts" / "gpu_check.sh")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("gpu_check: torch sees no CUDA device")
