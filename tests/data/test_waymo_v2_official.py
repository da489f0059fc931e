"""Cross-check with the official v2 tools (TensorFlow, in ``.venv-official``; slow, skipped without it):
the official ``Component.schema()`` of every component reads our synthesized files' schemas, and the
official v2 point conversion (``v2.convert_range_image_to_point_cloud`` on components joined with
``v2.merge``) gives the project's v2 points."""

import os
import subprocess

import numpy as np
import pytest
from tests.helpers.official import OFFICIAL_PYTHON, official_available
from tests.helpers.v2 import synth_pair

from detector.data import waymo_v2

_SCRIPT = r"""
import json, sys
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from waymo_open_dataset import v2

root, split, name, out = sys.argv[1:5]
path = lambda tag: f"{root}/{split}/{tag}/{name}.parquet"
components = {"lidar": v2.LiDARComponent, "lidar_pose": v2.LiDARPoseComponent,
              "lidar_calibration": v2.LiDARCalibrationComponent, "vehicle_pose": v2.VehiclePoseComponent,
              "lidar_box": v2.LiDARBoxComponent, "stats": v2.StatsComponent}
schemas = {}
for tag, cls in components.items():
    ours = pq.read_schema(path(tag))
    schemas[tag] = [[f.name, str(f.type).replace("element", "item")] for f in ours] == \
                   [[f.name, str(f.type).replace("element", "item")] for f in cls.schema()]

df = v2.merge(pd.read_parquet(path("lidar")), pd.read_parquet(path("lidar_calibration")))
df = v2.merge(df, pd.read_parquet(path("vehicle_pose")))
df = v2.merge(df, pd.read_parquet(path("lidar_pose")), right_nullable=True)
points = {}
for ts, frame in df.groupby("key.frame_timestamp_micros"):
    frame = frame.sort_values("key.laser_name")
    parts = []
    for k in (1, 2):
        for _, row in frame.iterrows():
            row = row.to_dict()
            lidar = v2.LiDARComponent.from_dict(row)
            calib = v2.LiDARCalibrationComponent.from_dict(row)
            top = lidar.key.laser_name == 1
            pixel_pose = v2.LiDARPoseComponent.from_dict(row).range_image_return1 if top else None
            frame_pose = v2.VehiclePoseComponent.from_dict(row) if top else None
            ri = lidar.range_image_return1 if k == 1 else lidar.range_image_return2
            parts.append(v2.convert_range_image_to_point_cloud(ri, calib, pixel_pose, frame_pose,
                                                               keep_polar_features=True).numpy())
    points[str(ts)] = np.concatenate(parts)
np.savez(out, **points)
print(json.dumps(schemas))
"""


@pytest.mark.slow
@pytest.mark.skipif(not official_available(), reason="no .venv-official with the TensorFlow Waymo package")
def test_matches_official_v2_conversion(tmp_path):
    import json

    protos, seg = synth_pair(tmp_path / "v2", frames=2, top_width=512, wobble=0.01, nlz_prob=1.0)
    script = tmp_path / "official_v2.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3",
           "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    run = subprocess.run([str(OFFICIAL_PYTHON), str(script), str(seg.root), seg.split, seg.name,
                          str(tmp_path / "official.npz")], env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    schemas = json.loads(run.stdout.strip().splitlines()[-1])
    assert schemas == {tag: True for tag in schemas} and len(schemas) == 6
    official = np.load(tmp_path / "official.npz")
    ours = list(waymo_v2.iter_frames(seg))
    assert sorted(official.files) == sorted(str(f.timestamp_micros) for f in ours)
    worst = 0.0
    for frame in ours:
        theirs = official[str(frame.timestamp_micros)]
        assert theirs.shape == (len(frame.points), 6)
        worst = max(worst, float(np.abs(theirs[:, 3:6] - frame.points[:, :3]).max()))
        np.testing.assert_array_equal(theirs[:, 1:3], frame.points[:, 3:5])  # intensity, elongation
    # both compute in float32; the v1 cross-check (tests/data/test_waymo_reader.py) measured 34 um
    assert worst < 1e-3, worst
    print(f"official v2 conversion vs ours: max |dxyz| = {worst * 1e6:.1f} um")
