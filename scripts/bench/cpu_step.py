"""Training step and streamed inference of the demo model on the CPU: compiled kernels vs the torch path.

The demo's model (``configs/model/lstm.yaml``, the small CPU config that ``experiment=demo_synthetic``
trains) on frames of a Waymo-format record file made by the project's synthesizer, cropped to the
demo's range:

- training step: forward + backward + Adam on a clip of 4 frames x batch 2 (frames 0-3 and 4-7 of
  the file), as ``data.clip_length=4 data.batch_size=2`` gives;
- streamed inference: ``Detector.step`` frame after frame with the LSTM state carried, per frame.

Both CPU paths of ``detector.ops`` run in this one process on two copies of the same model (same
weights; the voxelizer's compiled pass and the gate convolution's restricted rule book follow the path
too, so ``torch`` is the whole implementation before the kernels), interleaved step by step and frame
by frame, so that load changes on a shared machine hit
them alike; the median over the repeats is reported with the ratio ``cpp / torch``.

    .venv/bin/python -m data_tools.synthesize out_dir=/tmp/synth12 segments=1 val_segments=0 frames=12 seed=3 workers=1
    PYTHONPATH=. .venv/bin/python scripts/bench/cpu_step.py --records /tmp/synth12/training/*.tfrecord [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECORDS_RANGE = (-40.0, -40.0, -3.0, 40.0, 40.0, 4.0)  # the synthetic data config's crop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", required=True, help="a Waymo-format .tfrecord with >= 8 frames")
    ap.add_argument("--model", default="lstm")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5, help="timed training steps per path (after 1 warm-up)")
    ap.add_argument("--frames", type=int, default=8, help="timed streamed frames per path (after 2 warm-up)")
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    sys.path.insert(0, str(ROOT))
    import torch

    from detector.data.batch import ClipBatch
    from detector.data.clips import prepare_frame
    from detector.data.collate import collate_frames
    from detector.data.waymo_reader import iter_frames
    from detector.models import build_model
    from detector.ops.sparse_conv import use_cpu_backend

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    raw = [prepare_frame(f, RECORDS_RANGE, (1, 2, 4), False) for f in iter_frames(args.records)]
    if len(raw) < 8:
        raise SystemExit(f"{args.records}: {len(raw)} frames, the benchmark needs 8")
    clip = ClipBatch([collate_frames([raw[i], raw[4 + i]], [i == 0] * 2) for i in range(4)])
    stream = [collate_frames([f], [i == 0]) for i, f in enumerate(raw)]
    base = build_model(args.model)
    paths = ("torch", "cpp")
    models = {p: copy.deepcopy(base) for p in paths}
    opts = {p: torch.optim.Adam(m.parameters(), lr=1e-4) for p, m in models.items()}

    steps = {p: [] for p in paths}
    losses = {p: [] for p in paths}
    for i in range(args.steps + 1):
        for p in paths:
            m = models[p].train()
            with use_cpu_backend(p):
                t0 = time.perf_counter()
                loss = m(clip).losses["loss"]
                opts[p].zero_grad()
                loss.backward()
                opts[p].step()
                dt = time.perf_counter() - t0
            losses[p].append(loss.detach().item())
            if i:
                steps[p].append(dt)

    frames = {p: [] for p in paths}
    for p in paths:
        models[p].eval()
    states = {p: models[p].init_state(1, torch.device("cpu")) for p in paths}
    n_stream = min(len(stream), 2 + args.frames)
    with torch.no_grad():
        for i in range(n_stream):
            for p in paths:
                with use_cpu_backend(p):
                    t0 = time.perf_counter()
                    _, states[p] = models[p].step(stream[i], states[p])
                    dt = time.perf_counter() - t0
                if i >= 2:
                    frames[p].append(dt)

    med_s = {p: statistics.median(steps[p]) for p in paths}
    med_f = {p: statistics.median(frames[p]) for p in paths}
    print(f"model {args.model}, {args.threads} thread(s), clip 4 x 2 of {Path(args.records).name}; "
          f"median of {args.steps} steps / {len(frames['torch'])} frames, paths interleaved")
    print("| path | train step s | ratio | streamed ms/frame | ratio | first losses |")
    print("| --- | --- | --- | --- | --- | --- |")
    for p in paths:
        print(f"| {p} | {med_s[p]:.3f} | {med_s[p] / med_s['torch']:.2f} | {1e3 * med_f[p]:.1f} | "
              f"{med_f[p] / med_f['torch']:.2f} | {', '.join(f'{x:.4f}' for x in losses[p][:3])} |")


if __name__ == "__main__":
    main()
