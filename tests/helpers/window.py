"""The viewer window as a person sees it: the real ``python -m detector.visualize`` window on a virtual X
display, driven with real key presses, checked on screenshots.

    python -m tests.helpers.window docs/images/viewer.png     # the screenshot in docs/VISUALIZE.md

The test (tests/viz/test_window.py) and the docs screenshot share ``predictions_file`` and
``wait_screen``; the docs' predictions are the ground truth jittered (no trained model needed for a
picture), the test's are offset so that their edges are apart from the ground truth's.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tests.helpers.paths import REPO_ROOT

REPO = Path(REPO_ROOT)


def predictions_file(source, path: Path, jitter: float = 0.0, scale: float = 1.0, drop: float = 0.0,
                     seed: int = 0) -> Path:
    """A metrics_pb2.Objects file of the ground truth of every frame of ``source``: centres jittered by
    ``jitter`` m, footprints scaled by ``scale``, a ``drop`` share left out; scores uniform in
    [0.3, 1)."""
    from waymo_open_dataset.protos import metrics_pb2

    rng = np.random.default_rng(seed)
    objects = metrics_pb2.Objects()
    for i in range(source.num_frames):
        frame = source.load(i)
        for box, t in zip(frame.boxes, frame.types):
            if rng.random() < drop:
                continue
            b = box.astype(np.float64).copy()
            b[:3] += rng.normal(0.0, jitter, 3) if jitter else 0.0
            b[3:5] *= scale
            o = objects.objects.add()
            o.context_name, o.frame_timestamp_micros = frame.segment, frame.timestamp_micros
            bb = o.object.box
            bb.center_x, bb.center_y, bb.center_z, bb.length, bb.width, bb.height, bb.heading = map(float, b)
            o.object.type, o.score = int(t), float(rng.uniform(0.3, 1.0))
    path.write_bytes(objects.SerializeToString())
    return path


def wait_screen(session, record: dict, check, timeout: float = 120.0, every: float = 0.3):
    """Screenshots of the window until ``check(image)`` is true; returns (image, seconds waited).
    Raises ``AssertionError`` with the last image's verdict after ``timeout``."""
    t0 = time.monotonic()
    while True:
        image = session.window_image(record)
        if check(image):
            return image, time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"the window did not show the expected picture within {timeout} s")
        time.sleep(every)


def scene_pixels(image: np.ndarray, record: dict) -> np.ndarray:
    """The 3D view's part of a window image."""
    x, y, w, h = record["scene_rect"]
    return image[y:y + h, x:x + w]


def docs_screenshot(out: Path) -> None:
    """docs/images/viewer.png: a tiny synthetic segment with jittered ground truth as predictions."""
    from PIL import Image

    from detector.viz.sources import open_source
    from detector.viz.xdisplay import ViewerSession, VirtualDisplay
    from tests.helpers.datasets import make_tiny_dataset

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _, store = make_tiny_dataset(tmp, segments=0, val_segments=1, frames=3, seed=3)
        seg = next((store / "validation").iterdir())
        pred = predictions_file(open_source(seg), tmp / "predictions.bin", jitter=0.25, drop=0.15)
        with VirtualDisplay(1300, 900) as display, ViewerSession(
                display, [f"input={seg}", f"predictions={pred}", "width=1200", "height=800"],
                tmp / "trace.jsonl", cwd=REPO) as session:
            record = session.wait_drawn(timeout=120)
            session.keys(record, "Right")
            record = session.wait_drawn(lambda r: r["position"] == 1, timeout=60)
            image, _ = wait_screen(session, record, lambda im: b"frame 1" in record["caption"].encode()
                                   and (scene_pixels(im, record).max(axis=-1) > 40).mean() > 0.01)
            time.sleep(2.0)
            image = session.window_image(record)
        img = Image.fromarray(image).convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
        out.parent.mkdir(parents=True, exist_ok=True)
        img.save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} kB)")


if __name__ == "__main__":
    docs_screenshot(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "images" / "viewer.png")
