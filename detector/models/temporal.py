"""Temporal fusion modes of the Detector, one switch apart: ``SingleFrame`` (``none``),
``ConcatSweeps`` (``concat``: earlier sweeps moved into the current frame, time-offset channel) and
``RecurrentFusion`` (sparse convolutional LSTM/GRU/... with the ego-motion-aligned state).

Each implements ``TemporalFusion``, the one interface ``Detector`` uses, and owns the typed state it
carries in ``State.temporal`` (``SweepHistory``, ``RecurrentState``; None for a single frame):

- ``mode``, ``causal``; ``point_channels``: channels per point after the batch column that the
  voxelizer sees; ``in_channels``: backbone channels it expects (None: any);
- ``points(frame, state)``: the points to voxelize at this frame;
- ``out_channels(in_channels)``: channels of the features given to the head;
- ``fuse(feats, frame, state, grid, backward=False) -> Fused``: the features the head runs on (and what
  the mode needs to build its next state); ``backward``: the backward-in-time pass of a bidirectional
  mode;
- ``carry(fused, frame, state, head_out, grid) -> its state``: what the next ``State`` holds for it;
- ``join(forward, backward) -> SparseConvTensor``: the head's input from both passes (bidirectional).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from spconv.pytorch import SparseConvTensor
from torch import nn

from detector.boxes import points_in_boxes
from detector.data.batch import FrameBatch
from detector.models.cells import CELL_KINDS, SparseRecurrentCell
from detector.models.grid import VoxelGrid, relative_transforms, scatter_rows, union_sites, with_sweeps
from detector.models.outputs import HeadOutput
from detector.models.state import State, Sweep, keep_sweep_streams

__all__ = ["TemporalFusion", "Fused", "SingleFrame", "ConcatSweeps", "RecurrentFusion", "top_k_per_stream",
           "FusedOutput", "SweepHistory", "RecurrentState"]

#: Columns of FrameBatch.points after the batch column.
FRAME_POINT_CHANNELS = 5


class Fused:
    """What a temporal mode made of one frame: ``features``, the sparse tensor the head runs on."""

    def __init__(self, features: SparseConvTensor):
        self.features = features


@dataclass
class SweepHistory:
    """The ``concat`` mode's state: its newest-first earlier sweeps."""

    sweeps: list[Sweep]

    num_sites = 0

    def keep_streams(self, keep: torch.Tensor) -> SweepHistory:
        return SweepHistory(keep_sweep_streams(self.sweeps, keep))

    def detach(self) -> SweepHistory:
        return self

    def tensors(self) -> list[torch.Tensor]:
        return [t for s in self.sweeps for t in (s.points, s.poses, s.timestamps)]


@dataclass
class RecurrentState:
    """The recurrent modes' state: hidden (and, for LSTM cells, memory) features per layer on sites of the
    frame that made them.

    sites: (N, 4) int32 ``[b, z, y, x]``; hidden[l]: (N, H); memory[l]: (N, H) or None (GRU);
    age: (N,) int32, frames since the site last held a backbone site of its frame (0: the frame that
    made the state), or None where nobody counted (a site of unknown age counts as seen last frame).
    """

    sites: torch.Tensor
    hidden: list[torch.Tensor]
    memory: list[torch.Tensor | None]
    age: torch.Tensor | None = None

    @property
    def num_sites(self) -> int:
        return int(self.sites.shape[0])

    def select(self, rows: torch.Tensor) -> RecurrentState:
        return RecurrentState(
            self.sites[rows].contiguous(),
            [h[rows] for h in self.hidden],
            [None if c is None else c[rows] for c in self.memory],
            None if self.age is None else self.age[rows],
        )

    def keep_streams(self, keep: torch.Tensor) -> RecurrentState:
        return self.select(keep[self.sites[:, 0].long()])

    def detach(self) -> RecurrentState:
        return RecurrentState(
            self.sites, [h.detach() for h in self.hidden], [None if c is None else c.detach() for c in self.memory],
            self.age,
        )

    def tensors(self) -> list[torch.Tensor]:
        return [self.sites, *self.hidden, *(c for c in self.memory if c is not None),
                *(() if self.age is None else (self.age,))]

    def moved(self, transforms: torch.Tensor, grid: VoxelGrid) -> RecurrentState:
        """The state moved by ``transforms`` (B, 4, 4) onto ``grid``: site centres moved rigidly and
        re-voxelized, sites falling together averaging their features and keeping the youngest age, sites
        leaving the grid dropped. Identity transforms return the same sites and features (states are kept
        sorted by site)."""
        moved, inside = grid.move(self.sites, transforms)
        feats = [*self.hidden, *(c for c in self.memory if c is not None)]
        pooled = grid.pool(moved[inside], [f[inside] for f in feats])
        n_layers = len(self.hidden)
        rest = iter(pooled.features[n_layers:])
        memory = [None if c is None else next(rest) for c in self.memory]
        age = None
        if self.age is not None:
            age = self.age.new_full((pooled.sites.shape[0],), torch.iinfo(self.age.dtype).max)
            age = age.scatter_reduce_(0, pooled.inverse, self.age[inside], "amin")
        return RecurrentState(pooled.sites, pooled.features[:n_layers], memory, age)


class TemporalFusion(nn.Module):
    """The interface of every temporal mode (see the module docstring); the defaults are a single frame's."""

    mode = "none"
    causal = True
    point_channels = FRAME_POINT_CHANNELS

    def __init__(self, in_channels: int | None = None) -> None:
        super().__init__()
        self.in_channels = in_channels

    def out_channels(self, in_channels: int) -> int:
        return in_channels

    def points(self, frame: FrameBatch, state: State) -> torch.Tensor:
        return frame.points

    def fuse(self, feats: SparseConvTensor, frame: FrameBatch, state: State, grid: VoxelGrid,
             backward: bool = False) -> Fused:
        return Fused(feats)

    def carry(self, fused: Fused, frame: FrameBatch, state: State, head_out: HeadOutput | None,
              grid: VoxelGrid):
        """This mode's state after ``frame`` (None: it keeps nothing)."""
        return None

    def join(self, forward: Fused, backward: Fused) -> SparseConvTensor:
        """The head's input from a forward and a backward pass (bidirectional modes only)."""
        raise NotImplementedError(f"{type(self).__name__} has no backward pass")


class SingleFrame(TemporalFusion):
    """``temporal: none``: each frame on its own."""


class ConcatSweeps(TemporalFusion):
    """``temporal: concat``: the ``num_sweeps`` previous sweeps (same stream, not reset) are moved into
    the current vehicle frame by ``inv(pose_t) @ pose_k`` and concatenated with the current points; a
    sixth point channel holds the age of each point in seconds (0 for the current sweep)."""

    mode = "concat"
    point_channels = FRAME_POINT_CHANNELS + 1
    causal = True

    def __init__(self, num_sweeps: int = 3, in_channels: int | None = None) -> None:
        super().__init__(in_channels)
        if num_sweeps < 1:
            raise ValueError(f"ConcatSweeps: num_sweeps must be >= 1, got {num_sweeps}")
        self.num_sweeps = int(num_sweeps)

    @staticmethod
    def _sweeps(state: State) -> list[Sweep]:
        return [] if state.temporal is None else state.temporal.sweeps

    def points(self, frame: FrameBatch, state: State) -> torch.Tensor:
        return with_sweeps(frame.points, frame.poses, frame.timestamps, self._sweeps(state))

    def carry(self, fused: Fused, frame: FrameBatch, state: State, head_out: HeadOutput | None,
              grid: VoxelGrid) -> SweepHistory:
        """The newest ``num_sweeps`` sweeps, this frame's first."""
        newest = Sweep(frame.points, frame.poses, frame.timestamps)
        return SweepHistory([newest, *self._sweeps(state)][: self.num_sweeps])


def top_k_per_stream(batch: torch.Tensor, score: torch.Tensor, k: int) -> torch.Tensor:
    """Rows (ascending) of the ``k`` highest scores within each batch index."""
    if batch.numel() == 0:
        return batch.new_zeros((0,), dtype=torch.long)
    order = torch.argsort(score, descending=True, stable=True)
    order = order[torch.argsort(batch[order], stable=True)]
    b_sorted = batch[order]
    first = torch.searchsorted(b_sorted, b_sorted, right=False)
    rank = torch.arange(b_sorted.numel(), device=batch.device) - first
    return torch.sort(order[rank < k]).values


class FusedOutput(Fused):
    """Output of a recurrent pass on one frame: ``fused`` sparse tensor (union sites, last layer's
    hidden features, rule books attached; also ``features``) and the new per-layer cell state on the
    same sites; for a bidirectional mode, ``backward`` (which pass made it) and ``objectness`` (U,), the
    pass's own objectness logits, by which its state is pruned."""

    def __init__(self, fused: SparseConvTensor, hidden: list[torch.Tensor], memory: list[torch.Tensor | None],
                 age: torch.Tensor, backward: bool = False, objectness: torch.Tensor | None = None):
        super().__init__(fused)
        self.fused = fused
        self.hidden = hidden
        self.memory = memory
        self.age = age
        self.backward = backward
        self.objectness = objectness

    def state(self) -> RecurrentState:
        return RecurrentState(self.fused.indices, self.hidden, self.memory, self.age)


class RecurrentFusion(TemporalFusion):
    """Recurrent temporal fusion over the sparse backbone features.

    in_channels: backbone output channels; hidden_channels: H; cell: ``lstm`` | ``gru`` | ``peephole``
    | ``coupled``; num_layers: stacked layers (each on the same fused sites, layer l > 0 takes layer
    l-1's hidden); bidirectional: a second stack runs backwards in time and the head sees
    ``[h_forward, h_backward]`` (offline only). top_k: state sites kept per stream after each frame,
    by the head's objectness (bidirectional: by a per-direction objectness layer); forget_after: a site
    that has held no backbone site for more than this many frames leaves the state whatever its
    objectness (None: only the top_k bound; 0: the state keeps only this frame's sites). gate_*: see
    ``GateNet``; input_kernel: see ``SparseRecurrentCell``. skip: the head sees ``[x, h]`` (this frame's
    backbone features beside the last layer's hidden; zeros for x on sites only the state holds)
    instead of ``h`` alone; the carried state is the same either way. Causal models only.
    history_dropout: in training only, the probability that a square BEV region of ``history_cell``
    voxels a side (randomly offset each frame, per stream) loses its carried state, so that objects
    there meet the next frame without history, as one coming out of an occlusion does (0: off).
    object_dropout: in training only, the probability that a labelled object of the frame loses the
    carried state inside its BEV footprint grown by ``object_margin`` metres, so that it meets the next
    frame without history among neighbours that keep theirs (0: off).
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int = 32,
        cell: str = "lstm",
        num_layers: int = 1,
        bidirectional: bool = False,
        top_k: int = 4096,
        gate_channels: int = 32,
        gate_levels: int = 0,
        gate_depth: int = 1,
        forget_bias: float = 1.0,
        input_kernel: int = 3,
        skip: bool = False,
        forget_after: int | None = None,
        history_dropout: float = 0.0,
        history_cell: int = 16,
        object_dropout: float = 0.0,
        object_margin: float = 0.5,
    ) -> None:
        super().__init__(int(in_channels))
        if cell not in CELL_KINDS:
            raise ValueError(f"RecurrentFusion: unknown cell {cell!r}; expected one of {CELL_KINDS}")
        if num_layers < 1 or top_k < 1:
            raise ValueError(f"RecurrentFusion: num_layers ({num_layers}) and top_k ({top_k}) must be >= 1")
        self.mode = cell
        self.hidden_channels = int(hidden_channels)
        self.num_layers = int(num_layers)
        self.bidirectional = bool(bidirectional)
        self.causal = not self.bidirectional
        self.top_k = int(top_k)
        self.skip = bool(skip)
        if forget_after is not None and forget_after < 0:
            raise ValueError(f"RecurrentFusion: forget_after must be >= 0 or None, got {forget_after}")
        self.forget_after = None if forget_after is None else int(forget_after)
        if not 0.0 <= history_dropout < 1.0 or history_cell < 1:
            raise ValueError(f"RecurrentFusion: history_dropout must lie in [0, 1) and history_cell be >= 1, "
                             f"got {history_dropout} and {history_cell}")
        self.history_dropout = float(history_dropout)
        self.history_cell = int(history_cell)
        if not 0.0 <= object_dropout <= 1.0 or object_margin < 0:
            raise ValueError(f"RecurrentFusion: object_dropout must lie in [0, 1] and object_margin be >= 0, "
                             f"got {object_dropout} and {object_margin}")
        self.object_dropout = float(object_dropout)
        self.object_margin = float(object_margin)
        if self.skip and self.bidirectional:
            raise ValueError("RecurrentFusion: skip=true needs a causal model (bidirectional=false)")

        def stack(direction: str) -> nn.ModuleList:
            return nn.ModuleList(
                SparseRecurrentCell(
                    cell, self.in_channels if layer == 0 else self.hidden_channels, self.hidden_channels,
                    f"{direction}{layer}", gate_channels, gate_levels, gate_depth, forget_bias, input_kernel,
                )
                for layer in range(self.num_layers)
            )

        self.forward_cells = stack("fwd")
        if self.bidirectional:
            self.backward_cells = stack("bwd")
            # objectness of each direction's own hidden features, to keep its state bounded
            self.direction_objectness = nn.ModuleList([nn.Linear(self.hidden_channels, 1) for _ in range(2)])
            for lin in self.direction_objectness:
                nn.init.constant_(lin.bias, -4.6)

    def out_channels(self, in_channels: int) -> int:
        return self.hidden_channels * (2 if self.bidirectional else 1) + (self.in_channels if self.skip else 0)

    def fuse(self, feats: SparseConvTensor, frame: FrameBatch, state: State, grid: VoxelGrid,
             backward: bool = False) -> FusedOutput:
        """One step of the forward (or, bidirectional, the ``backward``) pass: the carried state moved into
        this frame and joined with ``feats``; a bidirectional pass also scores its own objectness."""
        if backward and not self.bidirectional:
            raise ValueError("RecurrentFusion.fuse: backward=True needs bidirectional=true")
        out = self.run(feats, state.temporal, relative_transforms(frame.poses, state.poses), grid, backward)
        if self.bidirectional:
            out.backward = backward
            out.objectness = self.direction_score(out, backward)
        return out

    def carry(self, fused: FusedOutput, frame: FrameBatch, state: State, head_out: HeadOutput | None,
              grid: VoxelGrid) -> RecurrentState:
        """The ``top_k`` sites per stream by the head's objectness (bidirectional: by the pass's own)."""
        score = fused.objectness if self.bidirectional else head_out.objectness()
        return self.prune(fused, score.detach() if self.bidirectional else score, frame, grid)

    def join(self, forward: FusedOutput, backward: FusedOutput) -> SparseConvTensor:
        """The head's input of a bidirectional mode: the union of both passes' sites, each site's last-layer
        hidden features of the forward pass beside those of the backward one (zeros where a pass lacks it)."""
        f = forward.fused
        sites, (rows_f, rows_b) = union_sites([f.indices, backward.fused.indices], f.spatial_shape)
        u = sites.shape[0]
        joined = torch.cat([scatter_rows(forward.hidden[-1], rows_f, u), scatter_rows(backward.hidden[-1], rows_b, u)],
                           dim=1)
        return SparseConvTensor(joined, sites, f.spatial_shape, f.batch_size)

    def empty_state(self, like: torch.Tensor) -> RecurrentState:
        z = like.new_zeros((0, self.hidden_channels))
        has_memory = self.forward_cells[0].has_memory
        return RecurrentState(
            like.new_zeros((0, 4), dtype=torch.int32),
            [z] * self.num_layers,
            [z if has_memory else None] * self.num_layers,
            like.new_zeros((0,), dtype=torch.int32),
        )

    def run(
        self,
        x: SparseConvTensor,
        prev: RecurrentState | None,
        transforms: torch.Tensor,
        grid: VoxelGrid,
        backward: bool = False,
    ) -> FusedOutput:
        """One step of one direction: align ``prev`` (sites on the previous frame's grid) by
        ``transforms`` (B, 4, 4), join it with the sites of ``x``, run the stacked cells."""
        cells = self.backward_cells if backward else self.forward_cells
        if prev is None or prev.num_sites == 0:
            prev = self.empty_state(x.features)
        else:
            prev = prev.moved(transforms, grid)
        sites, (rows_x, rows_s) = union_sites([x.indices, prev.sites], x.spatial_shape)
        u = sites.shape[0]
        x_rows = scatter_rows(x.features, rows_x, u)
        age = x.indices.new_zeros((u,), dtype=torch.int32)
        age[rows_s] = 1 if prev.age is None else prev.age.int() + 1
        age[rows_x] = 0
        inp = SparseConvTensor(x_rows, sites, x.spatial_shape, x.batch_size)
        hidden, memory = [], []
        for layer, cell in enumerate(cells):
            h, c, inp = cell(inp, prev.hidden[layer], prev.memory[layer], rows_s)
            hidden.append(h)
            memory.append(c)
            inp = inp.replace_feature(h)
        if self.skip:
            inp = inp.replace_feature(torch.cat([x_rows, hidden[-1]], dim=1))
        return FusedOutput(inp, hidden, memory, age)

    def prune(self, out: FusedOutput, score: torch.Tensor, frame: FrameBatch | None = None,
              grid: VoxelGrid | None = None) -> RecurrentState:
        """The state to carry: the ``top_k`` sites per stream by ``score`` among those not older than
        ``forget_after``, less the regions ``history_dropout`` drops and the objects of ``frame``
        (on ``grid``) ``object_dropout`` drops (training only)."""
        batch = out.fused.indices[:, 0].long()
        if self.forget_after is None:
            rows = top_k_per_stream(batch, score, self.top_k)
        else:
            young = torch.nonzero(out.age <= self.forget_after).squeeze(1)
            rows = young[top_k_per_stream(batch[young], score[young], self.top_k)]
        if self.training and self.history_dropout > 0 and rows.numel():
            rows = rows[self.surviving_regions(out.fused.indices[rows])]
        if self.training and self.object_dropout > 0 and rows.numel() and frame is not None and grid is not None:
            rows = rows[self.outside_dropped_objects(out.fused.indices[rows], frame.boxes, grid)]
        return out.state().select(rows)

    def outside_dropped_objects(self, sites: torch.Tensor, boxes: torch.Tensor, grid: VoxelGrid) -> torch.Tensor:
        """Mask (N,) of the ``sites`` (N, 4) ``[b, z, y, x]`` outside the BEV footprints, grown by
        ``object_margin``, of the ``boxes`` (M, 8) ``[b, box7]`` dropped this frame, each with probability
        ``object_dropout`` (torch's global generator)."""
        chosen = boxes[torch.rand(boxes.shape[0], device=boxes.device) < self.object_dropout].to(sites.device)
        if chosen.shape[0] == 0:
            return torch.ones(sites.shape[0], dtype=torch.bool, device=sites.device)
        footprints = chosen[:, 1:].float().clone()
        footprints[:, 2], footprints[:, 5] = 0.0, float("inf")  # BEV: any height
        flat = grid.centers(sites)
        flat[:, 2] = 0.0
        same_stream = sites[:, :1].long() == chosen[None, :, 0].long()
        inside = same_stream & points_in_boxes(flat, footprints, self.object_margin)
        return ~inside.any(dim=1)

    def surviving_regions(self, sites: torch.Tensor) -> torch.Tensor:
        """Mask (N,) of the ``sites`` (N, 4) ``[b, z, y, x]`` outside the BEV regions dropped this
        frame: squares of ``history_cell`` voxels, offset at random, each dropped with probability
        ``history_dropout`` (torch's global generator, seeded by the training)."""
        offset = torch.randint(0, self.history_cell, (2,), device=sites.device)
        cells = torch.div(sites[:, 2:4].long() + offset, self.history_cell, rounding_mode="floor")
        key = torch.stack([sites[:, 0].long(), cells[:, 0], cells[:, 1]], dim=1)
        regions, which = torch.unique(key, dim=0, return_inverse=True)
        keep = torch.rand(regions.shape[0], device=sites.device) >= self.history_dropout
        return keep[which]

    def direction_score(self, out: FusedOutput, backward: bool) -> torch.Tensor:
        """Objectness logits (U,) of one direction's hidden features (bidirectional mode)."""
        return self.direction_objectness[int(backward)](out.hidden[-1]).squeeze(1)
