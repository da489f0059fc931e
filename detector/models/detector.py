"""The Detector: voxelizer -> sparse U-Net backbone -> temporal fusion -> head -> box stages, for clips and streams.

Contract (used by training and evaluation; plain attributes, no hparams):

- ``forward(clip, decode=False, compute_loss=True) -> ClipOutput``: the clip's frames in order from a
  fresh state, gradients flowing through the temporal state across frames. ``losses["loss"]`` is the
  total averaged over frames, plus each box stage's term (``refine_box``, ``dir_box``) on the clip's last
  frame or all its frames (the stage's ``train_frames``) when the model has them. ``detections[t][b]``
  only with ``decode=True``.

- ``init_state(batch_size) -> State``; ``step(frame, state) -> (list[Detections], State)`` (with
  ``return_losses=True``: ``(detections, state, losses)``): online, no gradients, bounded state;
  honours ``frame.reset`` per stream and resets a stream whose timestamp gap exceeds ``max_gap_s``
  (either direction). Raises for a bidirectional model.
- ``offline_segment(frames, return_losses=False) -> list[list[Detections]]`` (with ``return_losses``
  also each frame's loss dict): a whole segment, any mode (bidirectional included), without gradients;
  ``detector.streaming`` runs bidirectional models this way, a segment at a time.
- ``box_stages``: the stages after decoding (``BoxStage``), in the order they apply; ``motion_heading``:
  whether streams of this model turn moving boxes to face their motion.
- ``temporal_mode``: ``"none"`` | ``"concat"`` | the cell kind (``"lstm"``, ``"gru"``, ``"peephole"``,
  ``"coupled"``); ``is_causal`` / ``bidirectional``: whether the model streams (``bidirectional`` is
  True only for the offline bidirectional recurrent model).

``Detections.boxes`` are Waymo 7-DoF boxes in the frame's vehicle frame, ``types`` Waymo type ids.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from spconv.pytorch import SparseConvTensor
from torch import nn

from detector.data.batch import ClipBatch, FrameBatch
from detector.data.clips import max_gap_micros
from detector.models.backbone import SparseUNet
from detector.models.box_refine import sweep_xyz_age
from detector.models.box_stage import BoxStage
from detector.models.head import DetectionHead
from detector.models.losses import sigmoid_focal_loss
from detector.models.outputs import ClipOutput, Detections, HeadOutput
from detector.models.state import State, Sweep
from detector.models.targets import assign_targets
from detector.models.temporal import Fused, FusedOutput, TemporalFusion
from detector.models.voxelizer import Voxelizer

__all__ = ["Detector"]


class Detector(nn.Module):
    """See the module docstring. Built by Hydra from ``configs/model/*.yaml``."""

    def __init__(
        self,
        voxelizer: Voxelizer,
        backbone: SparseUNet,
        temporal: TemporalFusion,
        head: DetectionHead | Callable[..., DetectionHead],
        max_gap_s: float | None = 0.5,
        box_stages: Mapping[str, BoxStage | None] | None = None,
        motion_heading: bool = False,
    ) -> None:
        super().__init__()
        self.voxelizer = voxelizer
        self.backbone = backbone
        self.temporal = temporal
        if not isinstance(head, nn.Module):  # a head still to build (``_partial_``): its input width is ours
            head = head(in_channels=temporal.out_channels(backbone.out_channels))
        self.head = head
        #: the stages after decoding, applied in this order to every frame's detections (training, ``step``,
        #: ``offline_segment`` and streams alike); a None entry is a stage turned off
        self.box_stages = nn.ModuleDict({k: s for k, s in (box_stages or {}).items() if s is not None})
        for key, stage in self.box_stages.items():
            if not isinstance(stage, BoxStage):
                raise ValueError(f"Detector: box_stages.{key} is a {type(stage).__name__}, not a BoxStage")
            if list(stage.classes) != list(head.classes):
                raise ValueError(f"Detector: box_stages.{key}.classes={stage.classes} must be the head's "
                                 f"classes {list(head.classes)} (one output per head class, in its order)")
        #: streams of this model turn moving boxes to face their motion (``detector.streaming``, after the
        #: box stages); the model itself does not read it
        self.motion_heading = bool(motion_heading)
        self.max_gap_s = None if max_gap_s is None else float(max_gap_s)
        self._max_gap_micros = max_gap_micros(max_gap_s)  # None: no limit
        want = voxelizer.num_features(temporal.point_channels)
        if backbone.in_channels != want:
            raise ValueError(
                f"Detector: backbone.in_channels={backbone.in_channels} but the voxelizer gives {want} features "
                f"for temporal mode {temporal.mode!r} ({temporal.point_channels} point channels)"
            )
        if temporal.in_channels is not None and temporal.in_channels != backbone.out_channels:
            raise ValueError(
                f"Detector: temporal.in_channels={temporal.in_channels} "
                f"!= backbone.out_channels={backbone.out_channels}"
            )
        fused = temporal.out_channels(backbone.out_channels)
        if head.in_channels != fused:
            raise ValueError(f"Detector: head.in_channels={head.in_channels} but the temporal module gives {fused}")

    # ----------------------------------------------------------------- properties
    @property
    def temporal_mode(self) -> str:
        return self.temporal.mode

    @property
    def is_causal(self) -> bool:
        return bool(self.temporal.causal)

    @property
    def classes(self) -> list[int]:
        """Trained Waymo type ids, in the order of the head's class logits."""
        return list(self.head.classes)

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """A fresh state for ``batch_size`` streams (every stream starts afresh on its next frame)."""
        if device is None:
            device = next(self.parameters()).device
        return State(
            poses=torch.eye(4, dtype=torch.float64, device=device).repeat(batch_size, 1, 1),
            timestamps=torch.zeros(batch_size, dtype=torch.long, device=device),
            valid=torch.zeros(batch_size, dtype=torch.bool, device=device),
        )

    # ----------------------------------------------------------------- public API
    def forward(self, clip: ClipBatch, decode: bool = False, compute_loss: bool = True) -> ClipOutput:
        if len(clip) == 0:
            raise ValueError("Detector.forward: empty clip")
        if not self.is_causal:
            return self._bidirectional(clip.frames, decode, compute_loss, cache=True)
        state = self.init_state(clip.batch_size, clip.frames[0].points.device)
        frame_losses, detections = [], [] if decode else None
        for frame in clip.frames:
            out, state = self._causal_frame(frame, state)
            if compute_loss:
                frame_losses.append(self.head.loss(out, self.head.targets(out, frame.boxes, frame.types)))
            if decode:
                detections.append(self._decode(out, frame, state.box_sweeps[1:]))
        losses = self._with_box_stages(self._average(frame_losses), clip.frames) if compute_loss else {}
        return ClipOutput(losses, frame_losses, detections, state.detach())

    @property
    def bidirectional(self) -> bool:
        """True for the offline bidirectional recurrent model (``step`` is not available)."""
        return not self.is_causal

    @torch.no_grad()
    def step(
        self, frame: FrameBatch, state: State, return_losses: bool = False
    ) -> tuple[list[Detections], State] | tuple[list[Detections], State, dict[str, torch.Tensor]]:
        """One online step (no gradients). See the module docstring. With ``return_losses`` also the
        frame's loss dict given the carried state (targets from ``frame.boxes``)."""
        if not self.is_causal:
            raise RuntimeError(
                "Detector.step: this model is bidirectional (it looks at future frames, so it cannot stream); "
                "use offline_segment(frames) or forward(clip)"
            )
        if state.batch_size != frame.batch_size:
            raise ValueError(f"Detector.step: state has {state.batch_size} streams, frame has {frame.batch_size}")
        out, state = self._causal_frame(frame, state)
        detections = self._decode(out, frame, state.box_sweeps[1:])
        if return_losses:
            losses = self._with_box_stages(self.head.loss(out, self.head.targets(out, frame.boxes, frame.types)),
                                           [frame])
            return detections, state.detach(), losses
        return detections, state.detach()

    @torch.no_grad()
    def offline_segment(
        self, frames: Sequence[FrameBatch], return_losses: bool = False
    ) -> list[list[Detections]] | tuple[list[list[Detections]], list[dict[str, torch.Tensor]]]:
        """Detections ``[t][b]`` for a whole segment (list of frames in time order), any mode. With
        ``return_losses`` also each frame's loss dict, as ``step`` gives it (targets from ``frame.boxes``;
        a bidirectional model's given the whole segment, with its ``aux_objectness``)."""
        frames = list(frames)
        if not frames:
            return ([], []) if return_losses else []
        if not self.is_causal:
            out = self._bidirectional(frames, decode=True, compute_loss=return_losses, cache=False)
            if not return_losses:
                return out.detections
            return out.detections, [self._with_box_stages(fl, [f]) for fl, f in zip(out.frame_losses, frames)]
        state = self.init_state(frames[0].batch_size, frames[0].points.device)
        result, losses = [], []
        for frame in frames:
            if return_losses:
                dets, state, frame_losses = self.step(frame, state, return_losses=True)
                losses.append(frame_losses)
            else:
                dets, state = self.step(frame, state)
            result.append(dets)
        return (result, losses) if return_losses else result

    # ----------------------------------------------------------------- internals
    def _reset_mask(self, frame: FrameBatch, state: State, flags: torch.Tensor | None = None) -> torch.Tensor:
        """Streams to start afresh: flagged (``frame.reset``, or ``flags`` when running backwards in
        time), never started, or a time gap beyond ``max_gap_s`` (either direction)."""
        flags = frame.reset if flags is None else flags
        gap = (frame.timestamps.to(state.timestamps.device) - state.timestamps).abs()
        reset = flags.to(state.valid.device).bool() | ~state.valid
        return reset if self._max_gap_micros is None else reset | (gap > self._max_gap_micros)

    def _encode(self, frame: FrameBatch, state: State) -> SparseConvTensor:
        points = self.temporal.points(frame, state)
        x = self.voxelizer(points, frame.batch_size)
        return self.backbone(x)

    def _head(self, fused: SparseConvTensor) -> HeadOutput:
        return self.head(fused, self.voxelizer.centers(fused.indices))

    @property
    def _box_frames(self) -> int:
        """Sweeps the box stages read (1: the current frame's points only)."""
        return max([1, *(s.frames for s in self.box_stages.values())])

    def _decode(self, out: HeadOutput, frame: FrameBatch, earlier: Sequence[Sweep] = ()) -> list[Detections]:
        """The head's detections per stream, moved and turned by the box stages if there are any; a stage
        that reads more than the current frame gets the ``earlier`` sweeps (newest first) too."""
        detections = self.head.decode(out, frame.batch_size)
        stages = list(self.box_stages.values())
        if not stages:
            return detections
        stream = frame.points[:, 0].long()
        swept = None
        if self._box_frames > 1:
            swept = sweep_xyz_age(frame.points, frame.poses, frame.timestamps, list(earlier))
            swept_stream = swept[:, 0].long()
        result = []
        for b, det in enumerate(detections):
            points = frame.points[stream == b, 1:4]
            for stage in stages:
                det = stage.apply(points if stage.frames == 1 else swept[swept_stream == b, 1:], det)
            result.append(det)
        return result

    def _box_sweeps(self, frame: FrameBatch, state: State) -> list[Sweep]:
        """What the state keeps for the box stages after ``frame``: its newest sweeps, this frame's first."""
        if self._box_frames == 1:
            return []
        return [Sweep(frame.points, frame.poses, frame.timestamps), *state.box_sweeps][: self._box_frames]

    def _with_box_stages(self, losses: dict[str, torch.Tensor],
                         frames: Sequence[FrameBatch]) -> dict[str, torch.Tensor]:
        """``losses`` plus each box stage's term (under its ``name``) on the labelled boxes of the clip's
        ``frames`` it trains on (``BoxStage.train_frames``: the last, or all of them; a stage sees single
        frames)."""
        if not losses:
            return losses
        for stage in self.box_stages.values():
            term = stage.clip_loss(frames)
            losses = {**losses, stage.name: term, "loss": losses["loss"] + stage.weight * term}
        return losses


    def _next_state(self, frame: FrameBatch, state: State, fused: Fused, out: HeadOutput | None,
                    box_sweeps: list[Sweep]) -> State:
        """The state after ``frame``: its poses and timestamps, every stream started, what the temporal
        mode carries of ``fused`` (and the head's ``out``), ``box_sweeps``."""
        return State(frame.poses.double(), frame.timestamps.long(), torch.ones_like(state.valid),
                     self.temporal.carry(fused, frame, state, out, self.voxelizer), box_sweeps)

    def _causal_frame(self, frame: FrameBatch, state: State) -> tuple[HeadOutput, State]:
        state = state.drop_streams(self._reset_mask(frame, state))
        feats = self._encode(frame, state)
        fused = self.temporal.fuse(feats, frame, state, self.voxelizer)
        out = self._head(fused.features)
        return out, self._next_state(frame, state, fused, out, self._box_sweeps(frame, state))

    def _bidirectional(
        self, frames: list[FrameBatch], decode: bool, compute_loss: bool, cache: bool
    ) -> ClipOutput:
        """Forward and backward recurrent passes; the head sees both directions' hidden features.

        The backward pass runs first. With ``cache`` (training) its per-frame outputs are kept; without
        (offline, long segments) only its bounded per-frame input states are kept and its step is
        recomputed during the forward pass, so memory grows by at most ``top_k`` sites a frame.
        """
        temporal, grid = self.temporal, self.voxelizer
        n = len(frames)
        batch_size = frames[0].batch_size
        device = frames[0].points.device
        aux_losses: list[torch.Tensor] = [frames[0].points.new_zeros(()) for _ in range(n)]
        feats_cache: dict[int, SparseConvTensor] = {}
        bwd_out: dict[int, FusedOutput] = {}
        bwd_in: dict[int, State] = {}
        state = self.init_state(batch_size, device)
        for t in range(n - 1, -1, -1):
            frame = frames[t]
            # going backwards, the flag that separates frame t from t+1 is frame t+1's
            flags = frames[t + 1].reset if t + 1 < n else torch.ones_like(frame.reset)
            state = state.drop_streams(self._reset_mask(frame, state, flags))
            feats = self._encode(frame, state)
            out_b = temporal.fuse(feats, frame, state, grid, backward=True)
            if compute_loss:
                aux_losses[t] = aux_losses[t] + self._objectness_loss(out_b, frame)
            if cache:
                feats_cache[t], bwd_out[t] = feats, out_b
            else:
                bwd_in[t] = state
            state = self._next_state(frame, state, out_b, None, [])

        frame_losses, detections = [], [] if decode else None
        state = self.init_state(batch_size, device)
        for t, frame in enumerate(frames):
            state = state.drop_streams(self._reset_mask(frame, state))
            feats = feats_cache.pop(t) if cache else self._encode(frame, state)
            out_f = temporal.fuse(feats, frame, state, grid)
            out_b = bwd_out.pop(t) if cache else temporal.fuse(feats, frame, bwd_in.pop(t), grid, backward=True)
            out = self._head(temporal.join(out_f, out_b))
            if compute_loss:
                losses = self.head.loss(out, self.head.targets(out, frame.boxes, frame.types))
                aux = aux_losses[t] + self._objectness_loss(out_f, frame)
                losses["aux_objectness"] = aux
                losses["loss"] = losses["loss"] + aux
                frame_losses.append(losses)
            if decode:
                k = self._box_frames
                earlier = [Sweep(g.points, g.poses, g.timestamps) for g in reversed(frames[max(0, t - k + 1):t])]
                detections.append(self._decode(out, frame, earlier))
            state = self._next_state(frame, state, out_f, None, [])
        losses = self._with_box_stages(self._average(frame_losses), frames) if compute_loss else {}
        return ClipOutput(losses, frame_losses, detections, None)

    def _objectness_loss(self, out: FusedOutput, frame: FrameBatch) -> torch.Tensor:
        """Class-agnostic focal loss of a pass's own objectness on its sites (bidirectional)."""
        logits, sites = out.objectness, out.fused.indices
        targets = assign_targets(
            self.voxelizer.centers(sites), sites[:, 0], frame.boxes, frame.types, self.head.classes,
            self.head.assign_margin,
            margin_below=self.head.assign_margin_below,
        )
        positive = targets.positive.float()
        return sigmoid_focal_loss(logits, positive, self.head.focal_alpha, self.head.focal_gamma) / max(
            targets.num_positive, 1
        )

    @staticmethod
    def _average(frame_losses: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        if not frame_losses:
            return {}
        return {k: torch.stack([fl[k] for fl in frame_losses]).mean() for k in frame_losses[0]}
