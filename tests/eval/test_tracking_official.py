"""Cross-check of the tracking metrics against the official TensorFlow op (slow; needs .venv-official,
made by scripts/setup_official.sh): every value within 1e-4, on the official fake files (LEVEL_2 rows: the
op cannot take tracking difficulty, which those files set) and on randomized cases."""

from pathlib import Path

import numpy as np
import pytest

from detector.eval import default_config
from detector.eval.submission import objects_to_frames, read_objects
from detector.eval.tracking_metrics import evaluate_tracking_frames
from tests.helpers.official import official_available, run_official_tracking_op, tracking_inputs
from tests.helpers.tracking_cases import random_sequences

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not official_available(), reason="needs .venv-official (scripts/setup_official.sh)")]
FAKE = Path(__file__).resolve().parents[3] / "shared" / "waymo_fake"
FAKE = FAKE if FAKE.is_dir() else Path("/work/shared/waymo_fake")


def _compare(gt, pred, levels=("LEVEL_1", "LEVEL_2")):
    for frames in (gt, pred):
        for f in frames.values():
            f.boxes = f.boxes.astype(np.float32).astype(np.float64)
    ours = evaluate_tracking_frames(gt, pred).compute()
    official = run_official_tracking_op(*tracking_inputs(gt, pred), default_config(), timeout=600)
    assert list(ours) == official.names
    compared = 0
    for name, theirs in official.as_dict().items():
        if not name.endswith(levels):
            continue
        for key, value in theirs.items():
            assert ours[name][key] == pytest.approx(value, abs=1e-4), (name, key, ours[name], theirs)
        compared += 1
    return ours, compared


@pytest.mark.skipif(not (FAKE / "fake_ground_truths.bin").exists(), reason="needs the official fake files")
def test_equal_to_the_official_op_on_the_fake_files_level_2():
    gt = objects_to_frames(read_objects(FAKE / "fake_ground_truths.bin"), tracking=True)
    pred = objects_to_frames(read_objects(FAKE / "fake_predictions.bin"), tracking=True)
    ours, compared = _compare(gt, pred, levels=("LEVEL_2",))
    assert compared == 16
    assert ours["OBJECT_TYPE_TYPE_VEHICLE_LEVEL_2"]["MOTA"] > 0.3  # not a table of zeros


@pytest.mark.parametrize("seed", range(4))
def test_equal_to_the_official_op_on_random_sequences(seed):
    gt, pred = random_sequences(seed, crowded=seed % 2 == 1)
    # The op reads no tracking difficulty: every ground truth unset, so both levels compare.
    for f in gt.values():
        f.tracking_difficulty = np.zeros_like(f.tracking_difficulty)
    ours, compared = _compare(gt, pred)
    assert compared == 32
    assert any(v["MISMATCH"] > 0 for v in ours.values())  # the cases do switch ids
