"""Raw-segment inputs of predict and visualize: v1 records and v2 segments named every way the
entry points accept, giving the same frames; clear errors otherwise."""

import pytest
import torch
from tests.helpers.v2 import synth_pair

from data_tools.synthesize import segment_file_name
from detector.data import waymo_v2_schema as S
from detector.data.segments import RawSegment, SegmentInputError, find_segment, find_segments
from detector.data.tfrecord import write_tfrecord
from detector.data.segments import find_segments, segment_frame_batches
from detector.viz import sources


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inputs")
    protos, seg = synth_pair(tmp / "v2", frames=3, top_width=256)
    _, other = synth_pair(tmp / "v2", frames=2, seed=9, split="validation", top_width=256)
    record = tmp / "v1" / segment_file_name(seg.name)
    record.parent.mkdir()
    write_tfrecord(record, (p.SerializeToString() for p in protos))
    return record, seg, other


def test_every_way_to_name_a_segment(inputs):
    record, seg, other = inputs
    one = RawSegment(seg.path(S.LIDAR), "v2")
    for name in (seg.path(S.LIDAR), seg.path(S.VEHICLE_POSE), seg.path(S.STATS), seg.root / seg.split / seg.name):
        assert find_segments(name) == [one] and find_segment(name).name() == seg.name
    assert find_segments(seg.root / "training") == [one]
    assert find_segments(seg.root) == [one, RawSegment(other.path(S.LIDAR), "v2")]
    assert find_segments(record) == [RawSegment(record, "v1")] == find_segments(record.parent)
    with pytest.raises(SegmentInputError, match="holds 2 segments"):
        find_segment(seg.root)
    with pytest.raises(SegmentInputError, match="input not found"):
        find_segments(seg.root / "training" / "no_such_segment")
    with pytest.raises(SegmentInputError, match="no .tfrecord files .* and no Waymo v2"):
        find_segments(seg.root / "training" / S.LIDAR)


def test_same_frames_for_predict_and_visualize(inputs):
    record, seg, _ = inputs
    v1, v2 = RawSegment(record, "v1"), RawSegment(seg.path(S.LIDAR), "v2")
    for a, b in zip(v1.frames(), v2.frames(), strict=True):
        assert a.equals(b)
    assert [f.index for f in v2.frames(start=1)] == [1, 2]
    crop = [-40, -40, -3, 40, 40, 4]
    batches = [list(segment_frame_batches(find_segments(p), crop, None)) for p in (record, seg.path(S.LIDAR))]
    assert len(batches[0]) == len(batches[1]) == 3
    for a, b in zip(*batches):
        assert torch.equal(a.points, b.points) and a.reset.tolist() == b.reset.tolist()

    src = sources.open_source(seg.root / seg.split / seg.name)
    assert (src.kind, src.name) == ("v2", seg.name)
    shown = list(src.frames(1, 3))
    assert [f.index for f in shown] == [1, 2] and shown[0].equals(next(v1.frames(start=1)))
    with pytest.raises(sources.VisualizeInputError, match="no frame at index 5"):
        list(src.frames(5))
    with pytest.raises(sources.VisualizeInputError, match="a Waymo v2 split with 1 segments"):
        sources.open_source(seg.root / "training")
