"""Frames of a selection on demand, for the interactive viewer.

``SceneLoader`` gives the scene frame at a position of the selection (0 = its first frame). One
background thread reads the wanted frame first, then the next ``readahead`` frames in the direction
of travel; only those (and the frame before the wanted one, for stepping back) are held, so memory
does not grow with the segment's length. ``prepare(scene)`` (the window's point arrays) runs on that
thread too.

With a checkpoint the detector is streamed over the frames on the same thread, in order, from the
selection's first frame, keeping its state; each frame's output (boxes, scores and, with
``show_state``, the state's sites: a few kB to a few hundred kB a frame) is kept. Going back to a frame
already reached shows exactly what the stream gave there; jumping ahead runs the detector over the
skipped frames (its state has to see them), with progress in ``status()``.

A frame that cannot be read is shown as an empty placeholder whose ``SceneFrame.error`` says why; the
stream skips it. An unexpected failure on the thread is raised again in the caller's thread on the
next ``get``/``wait``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from detector.data.frame import Frame, FrameFormatError
from detector.data.frame_store import FrameStoreError
from detector.data.tfrecord import RecordError
from detector.viz import sources
from detector.viz.scene import PredictedBoxes, SceneFrame, StateVoxels, clean_scene

#: What makes one frame unreadable (shown as a placeholder with the message) rather than the input.
FRAME_READ_ERRORS = (FrameFormatError, FrameStoreError, RecordError, OSError, sources.VisualizeInputError)


@dataclass
class LoadedFrame:
    """A frame ready to show: its position in the selection, the scene, ``prepare``'s product and how
    long reading (and, with a checkpoint, detecting) took."""

    position: int
    scene: SceneFrame
    prepared: object | None
    seconds: float


class _DetectorRun:
    """The checkpoint's detector streamed over the selection in order (on the loader's thread)."""

    def __init__(self, loader: SceneLoader, ckpt_path: str, ckpt_loader: str, device: str,
                 state_voxels: Callable | bool | None):
        self.loader = loader
        self.ckpt_path, self.ckpt_loader, self.device, self.state_voxels = ckpt_path, ckpt_loader, device, state_voxels
        self.outputs: dict[int, tuple[PredictedBoxes, StateVoxels | None]] = {}
        self.errors: dict[int, str] = {}
        self.failure: str | None = None
        self.reached = 0  # positions [0, reached) are done
        self._stream = None
        self._last: tuple[int, Frame] | None = None

    def _frames(self):
        for pos in range(len(self.loader)):
            try:
                frame = self.loader.read_frame(pos)
            except FRAME_READ_ERRORS as e:
                self.errors[pos] = str(e)
                self.reached = pos + 1
                continue
            yield frame

    def result(self, pos: int) -> tuple[Frame | None, PredictedBoxes | None, StateVoxels | None, str | None]:
        """(the frame if the stream read it, its boxes, state sites, read error) of position ``pos``."""
        while pos not in self.outputs and pos not in self.errors and self.failure is None:
            if self._stream is None:
                self._stream = iter(sources.detections_from_checkpoint(
                    self.ckpt_path, self._frames(), self.ckpt_loader, self.device, self.state_voxels))
            self.loader._set_status(f"running the detector: frame {self.reached + 1} of {len(self.loader)}")
            try:
                frame, boxes, voxels = next(self._stream)
            except StopIteration:
                break
            except (sources.VisualizeInputError, sources.CheckpointUnavailableError) as e:
                self.failure = str(e)
                break
            p = frame.index - self.loader.start
            self.outputs[p] = (boxes, voxels)
            self._last = (p, frame)
            self.reached = p + 1
        self.loader._set_status(None)
        if pos in self.errors:
            return None, None, None, self.errors[pos]
        if pos not in self.outputs:
            return None, None, None, None
        frame = self._last[1] if self._last is not None and self._last[0] == pos else None
        return (frame, *self.outputs[pos], None)


class SceneLoader:
    """Scene frames of ``source`` in [start, stop), read on demand on a background thread.

    Use it as a context manager (or call ``close``). ``request(pos)`` says which frame is wanted next;
    ``get(pos)`` returns it when ready (else None), ``wait(pos)`` blocks until it is."""

    def __init__(self, source: sources.FrameSource, start: int = 0, stop: int | None = None,
                 predictions: sources.PredictionIndex | None = None, ckpt_path: str | None = None,
                 ckpt_loader: str = sources.CHECKPOINT_LOADER, device: str = "cpu",
                 state_voxels: Callable | bool | None = None, readahead: int = 3,
                 prepare: Callable[[SceneFrame], object] | None = None):
        if source.num_frames is None:
            raise sources.VisualizeInputError(f"{source.path}: the number of frames is not known")
        if predictions is not None and ckpt_path:
            raise sources.VisualizeInputError("give predictions= or ckpt_path=, not both")
        stop = source.num_frames if stop is None else min(int(stop), source.num_frames)
        if not 0 <= start < stop:
            raise sources.VisualizeInputError(f"{source.path}: no frames in [{start}, {stop}) (segment has "
                                              f"{source.num_frames} frames)")
        if predictions is not None:
            predictions.check_segment(source.name)
        if ckpt_path:
            if not Path(ckpt_path).is_file():
                raise sources.VisualizeInputError(f"ckpt_path={ckpt_path}: no such file")
            sources.resolve_checkpoint_loader(ckpt_loader)  # a missing loader is an error now, not in the window
        if readahead < 0:
            raise ValueError(f"readahead must be >= 0, got {readahead}")
        self.source, self.start, self.stop = source, int(start), stop
        self.predictions = predictions
        self.readahead = int(readahead)
        self._prepare = prepare
        self._detector = _DetectorRun(self, ckpt_path, ckpt_loader, device, state_voxels) if ckpt_path else None
        self._cache: dict[int, LoadedFrame] = {}
        self._target = 0
        self._direction = 1
        self._generation = 0
        self._status: str | None = None
        self._failure: BaseException | None = None
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="scene-loader", daemon=True)
        self._thread.start()

    def __len__(self) -> int:
        return self.stop - self.start

    def __enter__(self) -> SceneLoader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the caller's side
    def request(self, pos: int, direction: int = 1) -> None:
        """Frame ``pos`` is wanted next (then the ``readahead`` after it in ``direction``)."""
        with self._cond:
            self._target = self._clamp(pos)
            self._direction = 1 if direction >= 0 else -1
            self._evict()
            self._cond.notify_all()

    def get(self, pos: int) -> LoadedFrame | None:
        with self._cond:
            self._raise_failure()
            item = self._cache.get(pos)
            return item if item is not None and item.prepared is not _STALE else None

    def wait(self, pos: int, timeout: float | None = None) -> LoadedFrame:
        """Request ``pos`` and block until it is ready (``TimeoutError`` after ``timeout`` seconds)."""
        self.request(pos)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                self._raise_failure()
                item = self._cache.get(pos)
                if item is not None and item.prepared is not _STALE:
                    return item
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"frame {pos} not ready after {timeout} s")
                self._cond.wait(left)

    def set_prepare(self, prepare: Callable[[SceneFrame], object] | None) -> None:
        """Replace ``prepare``; frames already read are prepared again (not read again)."""
        with self._cond:
            self._prepare = prepare
            self._generation += 1
            for item in self._cache.values():
                item.prepared = _STALE
            self._cond.notify_all()

    def held(self) -> list[int]:
        """Positions held in memory now."""
        with self._cond:
            return sorted(self._cache)

    def status(self) -> str | None:
        """What the thread is busy with when it is slow (the detector catching up), else None."""
        with self._cond:
            return self._status

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)

    # --- the thread's side
    def read_frame(self, pos: int) -> Frame:
        return self.source.load(self.start + pos)

    def _clamp(self, pos: int) -> int:
        return min(max(int(pos), 0), len(self) - 1)

    def _window(self) -> list[int]:
        """Positions to hold, most wanted first: the target, the read-ahead, the frame behind."""
        t, d = self._target, self._direction
        ahead = [t + d * k for k in range(self.readahead + 1)]
        return [p for p in ahead + [t - d] if 0 <= p < len(self)]

    def _evict(self) -> None:
        keep = set(self._window())
        for pos in [p for p in self._cache if p not in keep]:
            del self._cache[pos]

    def _next_job(self) -> int | None:
        for pos in self._window()[:self.readahead + 1]:
            item = self._cache.get(pos)
            if item is None or item.prepared is _STALE:
                return pos
        return None

    def _set_status(self, text: str | None) -> None:
        with self._cond:
            self._status = text

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise RuntimeError(f"the viewer's frame loader failed: {self._failure!r}") from self._failure

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._closed and (pos := self._next_job()) is None:
                        self._cond.wait()
                    if self._closed:
                        return
                    generation, prepare = self._generation, self._prepare
                    item = self._cache.get(pos)
                t0 = time.perf_counter()
                scene = item.scene if item is not None else self._read(pos)
                prepared = prepare(scene) if prepare is not None else None
                loaded = LoadedFrame(pos, scene, prepared, time.perf_counter() - t0)
                with self._cond:
                    if generation == self._generation and pos in self._window():
                        self._cache[pos] = loaded
                    self._cond.notify_all()
        except BaseException as e:  # handed to the caller's thread: raised there on the next get/wait
            with self._cond:
                self._failure = e
                self._cond.notify_all()

    def _read(self, pos: int) -> SceneFrame:
        index = self.start + pos
        if self._detector is not None:
            frame, boxes, voxels, error = self._detector.result(pos)
            if error is None and frame is None:
                frame, error = self._read_frame_or_error(pos)
            warnings = () if self._detector.failure is None else (f"detector: {self._detector.failure}",)
            return clean_scene(SceneFrame(frame if frame is not None else self.source.placeholder(index),
                                          boxes, voxels, warnings, error))
        frame, error = self._read_frame_or_error(pos)
        if frame is None:
            return SceneFrame(self.source.placeholder(index), None, None, (), error)
        preds = self.predictions.for_frame(frame) if self.predictions is not None else None
        return clean_scene(SceneFrame(frame, preds))

    def _read_frame_or_error(self, pos: int) -> tuple[Frame | None, str | None]:
        try:
            return self.read_frame(pos), None
        except FRAME_READ_ERRORS as e:
            return None, str(e)


_STALE = object()  # marks a held frame whose ``prepared`` predates the current ``prepare``

__all__ = ["FRAME_READ_ERRORS", "LoadedFrame", "SceneLoader"]
