"""What the integrity checks cost, as ratios against the work they guard, in this one process:

- ``verify_frame_file`` (the converter's resume check: every zip member against its CRC) against
  ``Frame.load_npz`` of the same frame files (what any reader pays);
- ``verify_checkpoint_crcs`` (before a checkpoint is loaded) against ``torch.load`` of the same file;
- ``check_frames`` (the metrics CLI's NaN/size check on the grouped arrays) against
  ``objects_to_frames`` (its grouping of the same objects, which it needs anyway).

    .venv/bin/python scripts/bench/integrity.py [--frames 8] [--repeats 3]

Why it stays: the cost of the integrity checks in docs/RESULTS.md, "Faults"; rerun when a check or the frame
format changes (docs/studies/fault-injection.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from scripts.bench._harness import best_of, one_thread  # noqa: E402

one_thread()

import argparse  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from detector.checkpoints import verify_checkpoint_crcs  # noqa: E402
from detector.data.frame import Frame, verify_frame_file  # noqa: E402
from detector.eval.object_checks import check_frames  # noqa: E402
from detector.eval.submission import detections_to_objects, objects_to_frames  # noqa: E402
from detector.models import instantiate_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--points", type=int, default=180_000, help="points per frame (a Waymo sweep: ~180k)")
    ap.add_argument("--objects", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = []
        for i in range(args.frames):
            f = Frame(points=rng.normal(size=(args.points, 5)).astype(np.float32), pose=np.eye(4), timestamp_micros=i,
                      boxes=rng.normal(size=(50, 7)), types=np.ones(50), ids=[str(j) for j in range(50)],
                      num_points=np.ones(50), difficulty=np.ones(50))
            paths.append(tmp / f"{i:04d}.npz")
            f.save_npz(paths[-1])
        load = best_of(lambda: [Frame.load_npz(p) for p in paths], args.repeats)
        verify = best_of(lambda: [verify_frame_file(p) for p in paths], args.repeats)
        print(f"frame files ({args.frames} x {args.points} points): load {load * 1e3 / args.frames:.1f} ms/frame, "
              f"verify {verify * 1e3 / args.frames:.1f} ms/frame, ratio verify/load {verify / load:.2f}")

        from omegaconf import OmegaConf

        from detector.config import compose

        cfg = OmegaConf.to_container(compose("train", overrides=["experiment=waymo_lstm"]).model, resolve=True)
        model = instantiate_model(cfg)
        ckpt = tmp / "model.ckpt"
        torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                    "hyper_parameters": {"model_cfg": cfg}}, ckpt)
        size = ckpt.stat().st_size / 2**20
        tl = best_of(lambda: torch.load(ckpt, map_location="cpu", weights_only=False), args.repeats)
        tv = best_of(lambda: verify_checkpoint_crcs(ckpt), args.repeats)
        print(f"checkpoint (waymo_lstm, {size:.0f} MiB): torch.load {tl * 1e3:.0f} ms, CRC check {tv * 1e3:.0f} ms, "
              f"ratio {tv / tl:.2f}")

    n = args.objects
    objs = detections_to_objects("ctx", 0, rng.uniform(1, 5, (n, 7)), rng.uniform(0, 1, n), np.ones(n))
    for i, o in enumerate(objs):
        o.frame_timestamp_micros = i // 200
    from waymo_open_dataset.protos import metrics_pb2

    objects = metrics_pb2.Objects(objects=objs)
    tg = best_of(lambda: objects_to_frames(objects), args.repeats)
    frames = objects_to_frames(objects)
    tc = best_of(lambda: check_frames(frames, "bench", ground_truth=False), args.repeats)
    print(f"objects ({n} in {len(frames)} frames): objects_to_frames {tg * 1e3:.0f} ms, "
          f"check_frames {tc * 1e3:.0f} ms, "
          f"ratio {tc / tg:.3f}")


if __name__ == "__main__":
    main()
