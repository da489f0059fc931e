"""The official Waymo range-image conversion (``frame_utils``, TensorFlow), for cross-checks and benchmarks.

Runs as a script in ``.venv-official`` (``scripts/setup_official.sh``) and imports nothing of the project:

    python tests/helpers/official_points.py points FRAME.pb OUT.npy     # xyz of both returns, laser order
    python tests/helpers/official_points.py time RECORDS.tfrecord REPEATS  # JSON: best seconds, frames, points
"""

import json
import sys
import time
import zlib


def _images(frame):
    from waymo_open_dataset import dataset_pb2

    images, pose = {}, dataset_pb2.MatrixFloat()
    for laser in frame.lasers:
        images[laser.name] = []
        for ri in (laser.ri_return1, laser.ri_return2):
            m = dataset_pb2.MatrixFloat()
            m.ParseFromString(zlib.decompress(ri.range_image_compressed))
            images[laser.name].append(m)
        if laser.name == dataset_pb2.LaserName.TOP:
            pose.ParseFromString(zlib.decompress(laser.ri_return1.range_image_pose_compressed))
    return images, pose


def frame_points(data: bytes, keep_polar_features: bool = False) -> list:
    """The valid pixels' points of each return (1, then 2) and laser (by name), as the official tool gives them."""
    import numpy as np
    from waymo_open_dataset import dataset_pb2
    from waymo_open_dataset.utils import frame_utils

    frame = dataset_pb2.Frame()
    frame.ParseFromString(data)
    images, pose = _images(frame)
    out = []
    for k in (0, 1):
        cart = frame_utils.convert_range_image_to_cartesian(frame, images, pose, ri_index=k,
                                                             keep_polar_features=keep_polar_features)
        for c in sorted(frame.context.laser_calibrations, key=lambda c: c.name):
            ri = np.array(images[c.name][k].data, np.float32).reshape(images[c.name][k].shape.dims)
            out.append(cart[c.name].numpy()[ri[..., 0] > 0])
    return out


def main(argv: list[str]) -> None:
    import numpy as np

    if argv[0] == "points":
        with open(argv[1], "rb") as f:
            np.save(argv[2], np.concatenate(frame_points(f.read())))
        return
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    records = [tf.compat.as_bytes(r.numpy()) for r in tf.data.TFRecordDataset(argv[1])]
    frame_points(records[0], keep_polar_features=True)  # warm-up (graph tracing)
    best, points = None, 0
    for _ in range(int(argv[2])):
        t = time.perf_counter()
        points = sum(len(p) for r in records for p in frame_points(r, keep_polar_features=True))
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    print(json.dumps({"seconds": best, "frames": len(records), "points": points}))


if __name__ == "__main__":
    main(sys.argv[1:])
