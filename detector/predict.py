"""Predict on raw records: ``python -m detector.predict experiment=NAME ckpt_path=PATH input=DIR``.

Reads Waymo v1 segment records or v2 segments directly (no conversion, no TensorFlow; ``input=`` as
``detector.data.segments.find_segments`` takes it), prepares each frame exactly
as the data module does (non-finite points dropped, points cropped to the model's range), streams
the detector with its state carried through each segment, and writes ``predictions.bin``
(``metrics_pb2.Objects``, the leaderboard format) atomically.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from tqdm import tqdm

from detector import CONFIG_DIR
from detector.data.batch import FrameBatch
from detector.data.clips import drop_nonfinite_points, frame_resets, prepare_frame
from detector.data.collate import collate_frames
from detector.data.segments import RawSegment, SegmentInputError, find_segments
from detector.errors import UserError, user_errors
from detector.evaluate import load_detector, pick_device
from detector.inference import stream_segments

log = logging.getLogger(__name__)


def find_records(path: str | Path) -> list[RawSegment]:
    """The segments of ``input=`` (v1 record files or v2 segments)."""
    try:
        return find_segments(path)
    except SegmentInputError as e:
        raise UserError(str(e)) from e


def record_frames(records: list[RawSegment], point_range, max_gap_s: float | None,
                  second_return: bool = True) -> Iterator[FrameBatch]:
    """Every frame of every segment, prepared as for evaluation, with ``reset`` at segment starts and gaps."""
    for segment in records:
        path = segment.path
        frames = []
        for frame in segment.frames(second_return=second_return):
            frame, dropped = drop_nonfinite_points(frame)
            if dropped:
                log.warning("%s frame %d: dropped %d points with NaN/inf values", path, frame.index, dropped)
            frames.append(prepare_frame(frame, point_range, classes=None, keep_boxes_outside_range=True))
            # a segment is ~200 frames: holding one segment's prepared frames keeps the gap logic simple
        resets = frame_resets([f.timestamp_micros for f in frames], max_gap_s)
        for f, r in zip(frames, resets):
            yield collate_frames([f], [bool(r)])


def predict(cfg: DictConfig) -> dict:
    from detector.eval import ObjectsWriter

    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    run_dir = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path(cfg.output_dir)
    out = Path(cfg.out) if cfg.get("out") else run_dir / "predictions.bin"
    out.parent.mkdir(parents=True, exist_ok=True)
    records = find_records(cfg.input)
    device = pick_device(cfg.device)
    model = load_detector(cfg.model, cfg.ckpt_path, device)
    frames = record_frames(records, cfg.data.get("point_range"), cfg.data.get("max_gap_s"), cfg.second_return)
    n = 0
    with ObjectsWriter(out) as writer:
        for r in tqdm(stream_segments(model, frames, device), desc="predict", unit="frame", file=sys.stderr):
            writer.add_detections(r.segment, r.timestamp_micros, r.boxes, r.scores, r.types)
            n += 1
    print(f"{n} frames of {len(records)} segments; wrote {writer.num_objects} detections to {out}")
    return {"predictions": str(out), "frames": n, "objects": writer.num_objects}


@hydra.main(config_path=CONFIG_DIR, config_name="predict", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    predict(cfg)


if __name__ == "__main__":
    main()
