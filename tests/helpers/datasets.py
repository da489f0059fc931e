"""Small synthetic datasets for tests: real synthesized TFRecords, converted to a real frame store.

    from tests.helpers.datasets import make_tiny_dataset     # pytest puts tests/ on sys.path
    records, store = make_tiny_dataset(tmp_path, segments=2, frames=6, seed=0)
    # records/training/*.tfrecord, records/validation/*.tfrecord
    # store/training/<segment>/0000.npz ..., store/validation/<segment>/...
"""

from __future__ import annotations

from pathlib import Path

from data_tools.convert_waymo import convert
from data_tools.synth_segment import SegmentConfig
from data_tools.synthesize import synthesize


def make_tiny_dataset(tmp_dir, segments: int = 2, frames: int = 6, seed: int = 0, val_segments: int = 1,
                      **segment_options) -> tuple[Path, Path]:
    """Synthesize ``segments`` training and ``val_segments`` validation segments of ``frames`` frames
    (demo lidar rig unless ``segment_options`` say otherwise, e.g. ``top_width=512``) into
    ``tmp_dir/records`` and convert them into ``tmp_dir/store``. Returns ``(records_dir, store_dir)``.
    About 3 s for 2 + 1 segments x 6 frames on one core."""
    tmp_dir = Path(tmp_dir)
    records, store = tmp_dir / "records", tmp_dir / "store"
    config = SegmentConfig(frames=frames, **segment_options)
    synthesize(records, segments, val_segments, seed, config, workers=1)
    results = convert(records, store, workers=1)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise RuntimeError(f"tiny dataset conversion failed: {[r.error for r in failed]}")
    return records, store
