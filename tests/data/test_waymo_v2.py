"""The Waymo v2 (parquet) reader against the v1 reader on the same synthesized frames: points of both
returns of every lidar (with rolling-shutter compensation), NLZ flags, labels, poses and timestamps;
whatever the row order, row groups, list child names, transform precision and key widths; the null
rules of the released files; clear errors for missing, truncated and inconsistent component files."""

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from tests.helpers.v2 import replace_column, rewrite_component, shuffle_rows, synth_pair

from data_tools.waymo_v2_writer import SCHEMAS, WRITTEN
from detector.data import waymo_v2
from detector.data import waymo_v2_schema as S
from detector.data.frame import FrameFormatError
from detector.data.waymo_reader import frame_from_proto

POINT_TOL = 1e-4  # metres: the bound for v2 against v1


def _v1_frames(protos, second_return=True):
    return [frame_from_proto(p, index=i, second_return=second_return) for i, p in enumerate(protos)]


def _assert_same(v1, v2, ordered_labels=True, point_tol=POINT_TOL, pose_tol=0.0):
    assert len(v1) == len(v2)
    for a, b in zip(v1, v2):
        assert (a.segment, a.index, a.timestamp_micros) == (b.segment, b.index, b.timestamp_micros)
        assert a.points.shape == b.points.shape
        assert np.abs(a.points - b.points).max() <= point_tol
        np.testing.assert_array_equal(a.nlz, b.nlz)
        np.testing.assert_allclose(a.pose, b.pose, atol=pose_tol, rtol=0)
        order_a = np.arange(len(a.ids)) if ordered_labels else np.argsort(a.ids)
        order_b = np.arange(len(b.ids)) if ordered_labels else np.argsort(b.ids)
        for name in ("ids", "boxes", "types", "num_points", "difficulty"):
            np.testing.assert_array_equal(getattr(a, name)[order_a], getattr(b, name)[order_b], err_msg=name)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Four frames, moving and wobbling ego, a no-label zone; v2 row groups of 2 frames."""
    root = tmp_path_factory.mktemp("v2")
    protos, seg = synth_pair(root, frames=4, top_width=512, wobble=0.01, nlz_prob=1.0)
    return protos, seg


@pytest.fixture
def copy(pair, tmp_path):
    """A private copy of the v2 segment to damage or rewrite."""
    protos, seg = pair
    shutil.copytree(seg.root, tmp_path / "v2")
    return protos, waymo_v2.V2Segment(tmp_path / "v2", seg.split, seg.name)


def test_files_have_the_component_schemas_and_several_row_groups(pair):
    _, seg = pair
    for component in WRITTEN:
        f = pq.ParquetFile(seg.path(component))
        assert f.schema_arrow.equals(SCHEMAS[component]), component
    assert pq.ParquetFile(seg.path(S.LIDAR)).metadata.num_row_groups == 2
    assert waymo_v2.find_segments(seg.root) == [seg]
    assert waymo_v2.is_v2_root(seg.root) and not waymo_v2.is_v2_root(seg.root / "training")


def test_same_frames_as_v1(pair):
    protos, seg = pair
    v1, v2 = _v1_frames(protos), list(seg.frames())
    _assert_same(v1, v2)
    assert all(f.nlz.any() for f in v2) and all(len(f.ids) > 5 for f in v2)
    # the reader's points are exactly the v1 reader's: the same conversion function on the same floats
    assert all(np.array_equal(a.points, b.points) for a, b in zip(v1, v2))


def test_first_return_only_and_frame_range(pair):
    protos, seg = pair
    _assert_same(_v1_frames(protos, second_return=False), list(seg.frames(second_return=False)))
    part = list(waymo_v2.iter_frames(seg, start=1, stop=3))
    assert [f.index for f in part] == [1, 2]
    _assert_same(_v1_frames(protos)[1:3], part)


def test_waymo_size_segment(tmp_path):
    """The Waymo rig: TOP 64x2650 and four 200x600 short-range lidars, both returns; one frame a row group."""
    protos, seg = synth_pair(tmp_path, frames=2, lidar="waymo", row_group_frames=1)
    lidar = pq.read_table(seg.path(S.LIDAR), columns=[S.KEY_LASER, S.LIDAR_RETURN[0] + S.SHAPE])
    assert sorted(set(lidar.column(S.KEY_LASER).to_pylist())) == [1, 2, 3, 4, 5]
    assert [64, 2650, 4] in lidar.column(S.LIDAR_RETURN[0] + S.SHAPE).to_pylist()
    v1, v2 = _v1_frames(protos), list(seg.frames())
    _assert_same(v1, v2)
    assert min(len(f.points) for f in v2) > 300_000


def test_shuffled_rows_and_other_row_groups(copy):
    protos, seg = copy
    for k, component in enumerate(WRITTEN):
        rewrite_component(seg.path(component), shuffle_rows(k), row_group_size=3)
    assert pq.ParquetFile(seg.path(S.LIDAR)).metadata.num_row_groups == 3  # 8 rows in groups of 3
    frames = list(seg.frames())
    _assert_same(_v1_frames(protos), frames, ordered_labels=False)


def test_rows_spread_beyond_the_cache(copy):
    """Rows of every frame spread over all row groups: still right when the cache holds one batch of
    one row (streams restart and batches are read again), and with the defaults."""
    protos, seg = copy
    path = seg.path(S.LIDAR)
    table = pq.read_table(path)
    lasers = table.column(S.KEY_LASER).to_numpy()
    order = np.argsort(lasers, kind="stable")  # TOP rows of all frames first, then FRONT rows
    pq.write_table(table.take(pa.array(order)), path, row_group_size=2)
    v1 = _v1_frames(protos)
    _assert_same(v1, list(waymo_v2.iter_frames(seg, batch_rows=1, cache_batches=1)))
    _assert_same(v1, list(waymo_v2.iter_frames(seg, batch_rows=3)))
    _assert_same(v1, list(seg.frames()))


def test_writer_variants_and_column_types(copy):
    """Child names ``item`` (no compliant nested types) and ``element``, transforms as lists of float32,
    laser names as int32, dictionary-encoded segment names, and an extra column: all read the same."""
    protos, seg = copy

    def floats(col):
        return pc.cast(col, pa.list_(pa.float32()))

    rewrite_component(seg.path(S.LIDAR), replace_column(S.KEY_LASER, lambda c: pc.cast(c, pa.int32())),
                      use_compliant_nested_type=False, store_schema=False)
    rewrite_component(seg.path(S.LIDAR_CALIBRATION), replace_column(S.EXTRINSIC, floats))
    rewrite_component(seg.path(S.VEHICLE_POSE), replace_column(S.WORLD_FROM_VEHICLE, floats))

    def extra(table):
        table = table.set_column(0, S.KEY_SEGMENT, table.column(S.KEY_SEGMENT).dictionary_encode())
        return table.append_column("index", pa.array([str(i) for i in range(table.num_rows)]))

    rewrite_component(seg.path(S.LIDAR_BOX), extra)
    lidar_schema = pq.ParquetFile(seg.path(S.LIDAR)).schema_arrow
    assert lidar_schema.field(S.KEY_LASER).type == pa.int32()
    assert pq.ParquetFile(seg.path(S.LIDAR_CALIBRATION)).schema_arrow.field(S.EXTRINSIC).type == pa.list_(pa.float32())
    # float32 transforms round the pose (and, through it, the points) to float32 precision
    v1 = _v1_frames(protos)
    frames = list(seg.frames())
    scale = max(np.abs(f.pose).max() for f in v1)
    _assert_same(v1, frames, point_tol=1e-3, pose_tol=scale * 2 ** -23)


def test_null_rules(copy):
    """Speed and acceleration null without metadata (NaN); difficulty null when unset (0, UNKNOWN);
    top-lidar count 0 when unset; a null beam-inclination list means uniform beams."""
    protos, seg = copy
    protos = [type(p).FromString(p.SerializeToString()) for p in protos]
    first = protos[0].laser_labels
    first[0].metadata.speed_x, first[0].metadata.speed_y, first[0].metadata.accel_x = 1.5, -0.5, 0.25
    first[1].tracking_difficulty_level = 2  # detection unset, tracking set: not null
    first[2].ClearField("num_top_lidar_points_in_box")
    from data_tools.waymo_v2_writer import write_v2_segment

    write_v2_segment(protos, seg.root, seg.split)
    t = pq.read_table(seg.path(S.LIDAR_BOX))
    ts0 = protos[0].timestamp_micros
    rows = [i for i, ts in enumerate(t.column(S.KEY_TIMESTAMP).to_pylist()) if ts == ts0]
    speed = t.column(S.BOX_SPEED[0]).to_pylist()
    assert speed[rows[0]] == 1.5 and speed.count(None) == t.num_rows - 1
    diff = t.column(S.BOX_DIFFICULTY_DETECTION).to_pylist()
    has_level = [bool(l.HasField("detection_difficulty_level")) for p in protos for l in p.laser_labels]
    assert [d is None for d in diff] == [not h and i != rows[1] for i, h in enumerate(has_level)]
    assert t.column(S.BOX_NUM_TOP_POINTS).to_pylist()[rows[2]] == 0

    labels = waymo_v2.read_segment_labels(seg)
    np.testing.assert_array_equal(labels.speed[rows[0]], [1.5, -0.5, 0.0])
    np.testing.assert_array_equal(labels.acceleration[rows[0]], [0.25, 0.0, 0.0])
    assert np.isnan(labels.speed[rows[1:]]).all() and np.isnan(labels.acceleration[rows[1:]]).all()
    assert labels.difficulty[rows[1]] == 0 and labels.tracking_difficulty[rows[1]] == 2
    assert labels.num_top_points[rows[2]] == 0
    assert set(labels.difficulty.tolist()) <= {0, 2} and (labels.difficulty == 2).any()
    _assert_same(_v1_frames(protos), list(seg.frames()))

    # explicit nulls where the released files may have them: counts and a whole difficulty struct
    def nulls(table):
        for name in (S.BOX_NUM_POINTS, S.BOX_NUM_TOP_POINTS, S.BOX_DIFFICULTY_DETECTION, S.BOX_DIFFICULTY_TRACKING):
            i = table.schema.get_field_index(name)
            table = table.set_column(i, name, pa.nulls(table.num_rows, table.schema.field(name).type))
        return table

    rewrite_component(seg.path(S.LIDAR_BOX), nulls)
    labels = waymo_v2.read_segment_labels(seg)
    assert (labels.num_points == 0).all() and (labels.difficulty == 0).all() and (labels.tracking_difficulty == 0).all()

    # the short-range lidar's calibration has no per-row inclinations: null in the file, uniform beams
    cal = pq.read_table(seg.path(S.LIDAR_CALIBRATION))
    assert cal.column(S.INCLINATION_VALUES).to_pylist()[1] is None
    assert len(cal.column(S.INCLINATION_VALUES).to_pylist()[0]) == 64


def test_return_2_null_means_no_second_return(copy):
    protos, seg = copy
    protos = [type(p).FromString(p.SerializeToString()) for p in protos]
    for p in protos:
        for laser in p.lasers:
            if laser.name == 2:
                laser.ri_return2.Clear()
    from data_tools.waymo_v2_writer import write_v2_segment

    write_v2_segment(protos, seg.root, seg.split)
    assert pq.read_table(seg.path(S.LIDAR)).column(S.LIDAR_RETURN[1] + S.VALUES).null_count == len(protos)
    _assert_same(_v1_frames(protos), list(seg.frames()))


def test_missing_component_names_the_file(copy):
    _, seg = copy
    seg.path(S.LIDAR_POSE).unlink()
    assert seg.missing() == [seg.path(S.LIDAR_POSE)]
    with pytest.raises(FrameFormatError, match=f"segment {seg.name}: no lidar_pose file {seg.path(S.LIDAR_POSE)}"):
        list(seg.frames())
    # the segment is still listed (it has the other components), so the converter names it
    assert waymo_v2.split_segments(seg.root, seg.split) == [seg]


def test_unlabeled_split_needs_no_lidar_box(tmp_path):
    protos, seg = synth_pair(tmp_path, frames=2, split="testing", top_width=256)
    seg.path(S.LIDAR_BOX).unlink()
    frames = list(seg.frames())
    assert len(frames) == 2 and all(f.num_boxes == 0 for f in frames)
    assert np.array_equal(frames[0].points, _v1_frames(protos)[0].points)


def test_truncated_and_corrupt_files_name_the_file(copy):
    _, seg = copy
    path = seg.path(S.LIDAR)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(FrameFormatError, match=f"{path}: not a readable parquet file"):
        list(seg.frames())
    # damaged data with an intact footer: the row group that holds it fails, naming file and row group
    path.write_bytes(raw)
    meta = pq.ParquetFile(path).metadata
    col = meta.row_group(1).column(3)  # range_image_return1.values of row group 1
    start = col.dictionary_page_offset if col.has_dictionary_page else col.data_page_offset
    damaged = bytearray(raw)
    for k in range(start + 64, start + col.total_compressed_size - 64, 97):
        damaged[k] ^= 0x5A
    path.write_bytes(bytes(damaged))
    with pytest.raises(FrameFormatError, match=f"{path} row group 1: unreadable"):
        list(seg.frames())


def test_inconsistent_components_are_refused(copy):
    protos, seg = copy
    ts = [p.timestamp_micros for p in protos]

    # a TOP pose row missing for one frame
    saved = seg.path(S.LIDAR_POSE).read_bytes()
    rewrite_component(seg.path(S.LIDAR_POSE), lambda t: t.filter(pc.not_equal(t.column(S.KEY_TIMESTAMP), ts[2])))
    with pytest.raises(FrameFormatError, match=f"lidar_pose.*no row for frame timestamp {ts[2]}, laser TOP"):
        list(seg.frames())
    seg.path(S.LIDAR_POSE).write_bytes(saved)

    # lidar rows of a frame the vehicle pose does not have
    rewrite_component(seg.path(S.VEHICLE_POSE), lambda t: t.filter(pc.not_equal(t.column(S.KEY_TIMESTAMP), ts[0])))
    with pytest.raises(FrameFormatError, match=f"rows for frame timestamp {ts[0]}, which .*vehicle_pose"):
        list(seg.frames())


def test_duplicate_rows_and_wrong_segment_are_refused(copy):
    _, seg = copy
    rewrite_component(seg.path(S.VEHICLE_POSE), lambda t: pa.concat_tables([t, t.slice(0, 1)]))
    with pytest.raises(FrameFormatError, match="vehicle_pose.*two rows for frame timestamp"):
        list(seg.frames())
    rewrite_component(seg.path(S.VEHICLE_POSE), lambda t: t.slice(0, t.num_rows - 1))
    rewrite_component(seg.path(S.LIDAR_CALIBRATION),
                      replace_column(S.KEY_SEGMENT, lambda c: pa.array(["other"] * len(c))))
    with pytest.raises(FrameFormatError, match="lidar_calibration.*rows of segment 'other'"):
        list(seg.frames())


def test_missing_column_is_named(copy):
    _, seg = copy
    rewrite_component(seg.path(S.LIDAR_BOX), lambda t: t.drop_columns([S.BOX_FIELDS[6]]))
    with pytest.raises(FrameFormatError, match=r"lidar_box.*no column '\[LiDARBoxComponent\].box.heading'"):
        list(seg.frames())
