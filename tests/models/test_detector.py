"""The Detector end to end on small synthetic clips: every shipped config, the recurrence, streaming,
resets, the bidirectional mode and the bounded state."""

import glob
import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from detector import CONFIG_DIR
from detector.data.batch import ClipBatch
from detector.models import Detections, Detector, State, build_model
from detector.models.head import DetectionHead
from tests.helpers.scenes import make_clip, make_scene, make_stream_frames

SMALL = ["lstm", "gru", "peephole", "coupled", "lstm_stacked", "lstm_bidirectional", "single_frame", "concat"]
# every detection of an untrained model, so outputs can be compared
ALL_SCORES = ["model.head.score_threshold=0.0", "model.head.pre_nms=200"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_every_shipped_config_builds():
    names = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(CONFIG_DIR, "model", "*.yaml")))
    assert set(SMALL + ["waymo_lstm", "waymo_single_frame", "waymo_concat"]) <= set(names)
    modes = {}
    for name in names:
        m = build_model(name)
        modes[name] = (m.temporal_mode, m.is_causal)
    assert modes["lstm"] == ("lstm", True) and modes["waymo_lstm"] == ("lstm", True)
    assert modes["single_frame"] == ("none", True) and modes["waymo_single_frame"] == ("none", True)
    assert modes["concat"] == ("concat", True) and modes["gru"] == ("gru", True)
    assert modes["lstm_bidirectional"] == ("lstm", False)


def test_mismatched_channels_are_named():
    with pytest.raises(Exception, match="backbone.in_channels=7 but the voxelizer gives 8"):
        build_model("concat", ["model.backbone.in_channels=7"])
    model = build_model("single_frame")
    with pytest.raises(ValueError, match="head.in_channels=9 but the temporal module gives 16"):
        Detector(model.voxelizer, model.backbone, model.temporal, DetectionHead(9))


def test_the_head_input_width_is_the_temporal_modules():
    """The configs leave the head's width to the detector (a ``_partial_`` head): the temporal module's
    ``out_channels`` of the backbone's, whatever the mode."""
    for name, overrides, want in [("single_frame", [], 16), ("concat", [], 16), ("lstm", [], 16),
                                  ("lstm_bidirectional", [], 32), ("lstm", ["model.temporal.skip=true"], 32),
                                  ("lstm", ["model.temporal.hidden_channels=8", "model.backbone.out_channels=12"], 8)]:
        model = build_model(name, overrides)
        assert model.head.in_channels == want == model.temporal.out_channels(model.backbone.out_channels), name


@pytest.mark.parametrize("name", SMALL)
def test_variant_runs_forward_and_backward(name):
    model = build_model(name)
    clip = make_clip(num_frames=3, batch_size=2, num_points=2500, seed=3)
    out = model(clip)
    assert set(out.losses) >= {"loss", "cls", "reg", "dir"}
    assert len(out.frame_losses) == 3 and out.detections is None
    assert all(torch.isfinite(v) for v in out.losses.values())
    out.losses["loss"].backward()
    without_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not without_grad, without_grad
    model.eval()
    with torch.no_grad():
        dets = model(clip, decode=True, compute_loss=False).detections
    assert len(dets) == 3 and all(len(d) == 2 for d in dets)
    assert all(isinstance(d, Detections) and d.boxes.shape[1] == 7 for d in dets[0])


@pytest.mark.parametrize("name,reaches", [("lstm", True), ("gru", True), ("concat", True), ("single_frame", False)])
def test_loss_on_the_last_frame_reaches_the_first_frame(name, reaches):
    """The recurrence is real: a loss on frame T alone has a gradient on frame 1's points (and the
    single-frame model, as a control, has none)."""
    model = build_model(name)
    clip = make_clip(num_frames=3, batch_size=1, num_points=2000, seed=4)
    first = clip.frames[0]
    points = first.points.clone().requires_grad_(True)
    clip = ClipBatch([replace(first, points=points), *clip.frames[1:]])
    out = model(clip)
    out.frame_losses[-1]["loss"].backward()
    grad = points.grad
    if reaches:
        assert grad is not None and grad.abs().sum() > 0
    else:
        assert grad is None or grad.abs().sum() == 0


def _outputs_equal(a: Detections, b: Detections) -> bool:
    return (len(a) == len(b) and torch.allclose(a.boxes, b.boxes, atol=1e-5)
            and torch.allclose(a.scores, b.scores, atol=1e-6))


@pytest.mark.parametrize("name", ["lstm", "concat"])
def test_streaming_matches_the_clip_and_resets_per_stream(name):
    model = build_model(name, ALL_SCORES).eval()
    scenes = [make_scene(10), make_scene(11)]
    frames = make_stream_frames(scenes, num_frames=4, num_points=2500, seed=5)
    with torch.no_grad():
        clip_dets = model(ClipBatch(frames), decode=True, compute_loss=False).detections
    state = model.init_state(2)
    for t, frame in enumerate(frames):
        dets, state = model.step(frame, state)
        assert all(_outputs_equal(a, b) for a, b in zip(dets, clip_dets[t]))
        assert len(dets[0]) > 0

    # frame 3 again, once with stream 1 flagged for reset, once with stream 0 after a long gap:
    # the reset stream sees exactly what a fresh state sees; the other one keeps its history
    fresh, _ = model.step(frames[3], model.init_state(2))
    assert not _outputs_equal(fresh[0], clip_dets[3][0])
    state3 = model.init_state(2)
    for frame in frames[:3]:
        _, state3 = model.step(frame, state3)
    flagged = replace(frames[3], reset=torch.tensor([False, True]))
    dets, _ = model.step(flagged, state3)
    assert _outputs_equal(dets[1], fresh[1]) and _outputs_equal(dets[0], clip_dets[3][0])
    late = replace(frames[3], timestamps=frames[3].timestamps + torch.tensor([int(model.max_gap_s * 1e6) + 1, 0]))
    dets, _ = model.step(late, state3)
    assert _outputs_equal(dets[0], fresh[0]) and _outputs_equal(dets[1], clip_dets[3][1])


def _single_stream(frame, b: int):
    """Stream ``b`` of a batched frame as a batch-size-1 frame."""
    keep = frame.boxes[:, 0] == b
    boxes = frame.boxes[keep].clone()
    boxes[:, 0] = 0
    pts = frame.points[frame.points[:, 0] == b].clone()
    pts[:, 0] = 0
    return replace(frame, points=pts, poses=frame.poses[b:b + 1], timestamps=frame.timestamps[b:b + 1],
                   reset=frame.reset[b:b + 1], boxes=boxes, types=frame.types[keep], num_points=frame.num_points[keep],
                   difficulty=frame.difficulty[keep], segments=frame.segments[b:b + 1], indices=frame.indices[b:b + 1])


def test_stream_segments_reset_every_starts_the_state_afresh():
    from detector.streaming import stream_segments

    model = build_model("lstm", ALL_SCORES).eval()
    frames = make_stream_frames([make_scene(12), make_scene(13)], num_frames=5, num_points=2500, seed=6)
    # two segments one after the other, as a split's loader gives them
    seq = [_single_stream(f, 0) for f in frames] + [_single_stream(f, 1) for f in frames]
    seq[5] = replace(seq[5], reset=torch.tensor([False]))  # the new segment name alone must reset

    def scores(reset_every):
        return [r.scores for r in stream_segments(model, seq, "cpu", reset_every)]

    carried, every2, alone = scores(None), scores(2), scores(1)
    # reset every 2 = windows [0, 1], [2, 3], [4] of each segment, each from a fresh state
    windows = []
    for start in (0, 2, 4, 5, 7, 9):
        window = seq[start:min(start + 2, 5 if start < 5 else 10)]
        windows += [r.scores for r in stream_segments(model, window, "cpu")]
    assert all(np.array_equal(a, b) for a, b in zip(every2, windows)) and len(every2) == 10
    # segment starts are fresh whatever N; carried history changes the later frames
    for i in (0, 5):
        assert np.array_equal(carried[i], alone[i]) and np.array_equal(carried[i], every2[i])
    assert not np.array_equal(carried[3], alone[3]) and not np.array_equal(carried[3], every2[3])
    assert np.array_equal(carried[1], every2[1])
    with pytest.raises(ValueError, match="reset_every"):
        next(stream_segments(model, seq, "cpu", 0))


def test_streams_run_a_bidirectional_model_a_segment_at_a_time():
    """``stream`` (validation, evaluate, predict) runs a bidirectional model offline over each segment."""
    from detector.streaming import Stream, stream
    from detector.tracking import TrackerConfig

    model = build_model("lstm_bidirectional", ALL_SCORES).eval()
    model.motion_heading = False  # the model's own detections, not turned by motion
    a = make_clip(num_frames=3, batch_size=1, num_points=2000, seed=6).frames
    b = [replace(f, segments=["other"]) for f in make_clip(num_frames=2, batch_size=1, num_points=2000, seed=7).frames]
    with pytest.raises(ValueError, match="bidirectional"):
        Stream(model)
    steps = list(stream(model, [*a, *b], tracker=TrackerConfig(enabled=False)))  # no track ids, scores as decoded
    want = [d[0] for d in model.offline_segment(a)] + [d[0] for d in model.offline_segment(b)]
    assert len(steps) == 5 and all(_outputs_equal(s.detections, w) for s, w in zip(steps, want))
    assert [s.frame.segments[0] for s in steps] == ["synthetic-0"] * 3 + ["other"] * 2
    dets, losses = model.offline_segment(a, return_losses=True)
    assert len(losses) == 3 and {"loss", "aux_objectness", "refine_box", "dir_box"} <= set(losses[0])
    assert all(_outputs_equal(x[0], w) for x, w in zip(dets, want))


def test_bidirectional_model_runs_offline_only():
    model = build_model("lstm_bidirectional", ALL_SCORES).eval()
    frames = make_clip(num_frames=3, batch_size=2, num_points=2000, seed=6).frames
    assert model.bidirectional and not model.is_causal
    with pytest.raises(RuntimeError, match="bidirectional"):
        model.step(frames[0], model.init_state(2))
    offline = model.offline_segment(frames)
    with torch.no_grad():
        clip_dets = model(ClipBatch(frames), decode=True, compute_loss=False).detections
    assert len(offline) == 3 and all(len(d) == 2 for d in offline)
    # the memory-light offline pass (recomputed backward steps) gives the clip's result
    for t in range(3):
        assert all(_outputs_equal(a, b) for a, b in zip(offline[t], clip_dets[t]))
    # the future matters: frame 0 differs when the later frames change
    other = make_clip(num_frames=3, batch_size=2, num_points=2000, seed=7).frames
    changed = model.offline_segment([frames[0], *other[1:]])
    assert not _outputs_equal(changed[0][0], offline[0][0])


def _state_rows_per_stream(state: State) -> list[int]:
    if state.temporal is None:
        return [0] * state.batch_size
    b = state.temporal.sites[:, 0].long()
    return [int((b == i).sum()) for i in range(state.batch_size)]


def test_state_stays_bounded_over_a_long_stream():
    """200 frames of two streams: the state never exceeds top_k sites per stream (or K sweeps), holds
    no autograd graph, and its size after 200 frames is what it was after 20."""
    top_k = 48
    lstm = build_model("lstm", [f"model.temporal.top_k={top_k}"]).eval()
    concat = build_model("concat").eval()
    scenes = [make_scene(20, radius=20.0, ego_speed=6.0), make_scene(21, radius=20.0, ego_speed=3.0)]
    frames = make_stream_frames(scenes, num_frames=200, num_points=600, seed=8, radius=25.0)
    s_lstm, s_concat = lstm.init_state(2), concat.init_state(2)
    sizes_lstm, sizes_concat = [], []
    for t, frame in enumerate(frames):
        if t == 120:  # a segment boundary in stream 1 mid-way
            frame = replace(frame, reset=torch.tensor([False, True]))
        _, s_lstm = lstm.step(frame, s_lstm)
        _, s_concat = concat.step(frame, s_concat)
        rows = _state_rows_per_stream(s_lstm)
        assert max(rows) <= top_k and min(rows) > 0
        assert len(s_concat.temporal.sweeps) <= 3
        assert all(not x.requires_grad for x in s_lstm.temporal.tensors())
        sizes_lstm.append(s_lstm.nbytes())
        sizes_concat.append(s_concat.nbytes())
    bound = 2 * top_k * (4 * 4 + 4 + 2 * 4 * lstm.temporal.hidden_channels) + 1024   # sites, age, h, c
    assert max(sizes_lstm) <= bound
    assert max(sizes_lstm[150:]) <= max(sizes_lstm[10:30]) * 1.05
    assert max(sizes_concat[150:]) <= max(sizes_concat[10:30]) * 1.3


def test_skip_gives_the_head_this_frames_features_beside_the_hidden():
    """``temporal.skip``: the head's input is [x, h]: the backbone features on this frame's sites, zeros on
    the sites only the state holds, then the hidden; the carried state is the hidden alone."""
    model = build_model("lstm", ["model.temporal.skip=true", *ALL_SCORES]).eval()
    assert model.head.in_channels == model.backbone.out_channels + model.temporal.hidden_channels
    frames = make_stream_frames([make_scene(12)], num_frames=2, num_points=2500, seed=9)
    captured, runs = [], []
    hook = model.head.register_forward_pre_hook(lambda mod, args: captured.append(args[0]))
    run = model.temporal.run
    model.temporal.run = lambda *a, **k: runs.append(run(*a, **k)) or runs[-1]   # records the real pass
    state = model.init_state(1)
    with torch.no_grad():
        for frame in frames:
            feats = model._encode(frame, state)
            _, state = model.step(frame, state)
    hook.remove()
    fused = captured[-1]
    c = model.backbone.out_channels
    x_part, h_part = fused.features[:, :c], fused.features[:, c:]
    here = {tuple(r) for r in feats.indices.tolist()}
    on_frame = torch.tensor([tuple(r) in here for r in fused.indices.tolist()])
    assert on_frame.any() and (~on_frame).any()        # the state brought sites this frame lacks
    assert torch.all(x_part[~on_frame] == 0)
    rows = {tuple(r): i for i, r in enumerate(feats.indices.tolist())}
    order = torch.tensor([rows[tuple(r)] for r in fused.indices[on_frame].tolist()])
    assert torch.allclose(x_part[on_frame], feats.features[order])
    assert torch.equal(h_part, runs[-1].hidden[-1]) and state.temporal.hidden[-1].shape[1] == h_part.shape[1]
    with pytest.raises(Exception, match="skip=true needs a causal model"):
        build_model("lstm_bidirectional", ["model.temporal.skip=true"])


@pytest.mark.parametrize("forget_after", [0, 2, None])
def test_forget_after_drops_state_sites_without_a_point_for_that_many_frames(forget_after):
    """``temporal.forget_after``: every carried site is at most that many frames past its last backbone
    site; age 0 means a site of this frame. None keeps older memory, so the bound bites."""
    over = ["model.temporal.forget_after=" + ("null" if forget_after is None else str(forget_after))]
    model = build_model("lstm", ["model.temporal.top_k=100000", *over]).eval()
    scenes = [make_scene(20, radius=20.0, ego_speed=6.0), make_scene(21, radius=20.0, ego_speed=3.0)]
    frames = make_stream_frames(scenes, num_frames=8, num_points=800, seed=8, radius=25.0)
    state, oldest = model.init_state(2), 0
    with torch.no_grad():
        for frame in frames:
            here = {tuple(r) for r in model._encode(frame, state).indices.tolist()}
            _, state = model.step(frame, state)
            age, sites = state.temporal.age, state.temporal.sites.tolist()
            assert age.shape == (len(sites),) and age.dtype == torch.int32
            assert all((tuple(r) in here) == (a == 0) for r, a in zip(sites, age.tolist()))
            oldest = max(oldest, int(age.max()))
    if forget_after is None:
        assert oldest > 2
    else:
        assert oldest == forget_after
    with pytest.raises(Exception, match="forget_after must be >= 0"):
        build_model("lstm", ["model.temporal.forget_after=-1"])
    assert build_model("lstm").temporal.forget_after == 0          # the default: only this frame's sites carry on


def test_history_dropout_drops_whole_regions_of_the_state_in_training_only():
    """``temporal.history_dropout``: in training the carried state loses whole BEV squares of
    ``history_cell`` voxels (every site of a square or none), about that share of them; in evaluation
    nothing is dropped."""
    model = build_model("lstm", ["model.temporal.top_k=100000", "model.temporal.history_dropout=0.5",
                                 "model.temporal.history_cell=8"])
    frames = make_stream_frames([make_scene(22, radius=20.0, ego_speed=4.0)], num_frames=1, num_points=1500,
                                seed=9, radius=25.0)
    torch.manual_seed(0)
    with torch.no_grad():
        full = model.eval().step(frames[0], model.init_state(1))[1].temporal.sites
        kept = model.train().step(frames[0], model.init_state(1))[1].temporal.sites
    all_sites = {tuple(r) for r in full.tolist()}
    kept_sites = {tuple(r) for r in kept.tolist()}
    assert kept_sites < all_sites and 0.2 < len(kept_sites) / len(all_sites) < 0.8
    # the dropped sites fill squares of 8 voxels: find the frame's offset that makes every square all-or-none
    def whole(offset):
        squares = {}
        for r in all_sites:
            squares.setdefault(((r[2] + offset[0]) // 8, (r[3] + offset[1]) // 8), set()).add(r in kept_sites)
        return all(len(v) == 1 for v in squares.values())
    assert any(whole((oy, ox)) for oy in range(8) for ox in range(8))
    with pytest.raises(Exception, match="history_dropout must lie in"):
        build_model("lstm", ["model.temporal.history_dropout=1.0"])
    assert build_model("lstm").temporal.history_dropout == 0.0


def test_object_dropout_drops_the_state_inside_labelled_boxes_in_training_only():
    """``temporal.object_dropout``: in training every site the state drops lies inside the BEV footprint
    (grown by ``object_margin``) of a labelled box, and with probability 1 every such site goes; in
    evaluation nothing is dropped."""
    from detector.boxes import points_in_boxes
    model = build_model("lstm", ["model.temporal.top_k=100000", "model.temporal.object_dropout=1.0",
                                 "model.temporal.object_margin=0.5"])
    frames = make_stream_frames([make_scene(22, radius=20.0, ego_speed=4.0)], num_frames=1, num_points=1500,
                                seed=9, radius=25.0)
    frame = frames[0]
    assert frame.boxes.shape[0] > 0
    with torch.no_grad():
        full = model.eval().step(frame, model.init_state(1))[1].temporal.sites
        kept = model.train().step(frame, model.init_state(1))[1].temporal.sites
    centers = model.voxelizer.centers(full)
    footprints = frame.boxes[:, 1:].clone()
    footprints[:, 2], footprints[:, 5] = 0.0, float("inf")       # BEV: any height
    flat = torch.cat([centers[:, :2], torch.zeros_like(centers[:, :1])], dim=1)
    inside = points_in_boxes(flat, footprints, margin=0.5).any(dim=1)
    assert inside.any() and (~inside).any()
    expected = {tuple(r) for r in full[~inside].tolist()}
    assert {tuple(r) for r in kept.tolist()} == expected
    with pytest.raises(Exception, match="object_dropout must lie in"):
        build_model("lstm", ["model.temporal.object_dropout=1.5"])
    assert build_model("lstm").temporal.object_dropout == 0.0
