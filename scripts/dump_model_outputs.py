"""Dump the outputs of the small model configs on a fixed clip, to compare two trees of the project.

    python scripts/dump_model_outputs.py dump OUT.npz [--root TREE] [--save-weights W.pt | --load-weights W.pt]
    python scripts/dump_model_outputs.py diff A.npz B.npz

For each config (seeded weights, a 3-frame clip of batch 2 from ``tests.helpers.scenes.make_clip``) it
saves the clip's losses, every decoded box/score/type and the last streamed step's detections; ``diff``
lists the arrays that are not bit-identical. A refactoring that changes no behaviour shows none.

A change that only draws a fresh model's initial weights in another order (modules built in another
order) shows every array changed; compare with the same weights instead: dump the old tree with
``--save-weights W.pt``, the new one with ``--load-weights W.pt`` (weights of before renamed as
``detector.checkpoints.upgrade_state_dict`` does for checkpoints), and ``diff`` those two dumps.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CONFIGS = ["lstm", "gru", "concat", "single_frame", "lstm_bidirectional", "lstm_stacked", "lstm_unet_gates"]


def dump(out: str, root: str, save_weights: str | None = None, load_weights: str | None = None) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, root)
    try:
        from tests.helpers.scenes import make_clip
    except ImportError:  # trees from before the test helpers moved
        from detector.models.testing import make_clip
    from detector.models import build_model

    weights = torch.load(load_weights) if load_weights else None
    saved = {}
    res = {}
    for name in CONFIGS:
        torch.manual_seed(0)
        model = build_model(name, ["model.head.score_threshold=0.0"])
        saved[name] = {k: v.clone() for k, v in model.state_dict().items()}  # before the runs change buffers
        if weights is not None:
            from detector.checkpoints import upgrade_state_dict

            model.load_state_dict(upgrade_state_dict(weights[name]))
        clip = make_clip(num_frames=3, batch_size=2, num_points=6000, seed=5)
        result = model(clip, decode=True)
        for k, v in result.losses.items():
            res[f"{name}/loss/{k}"] = v.detach().numpy()
        for t, dets in enumerate(result.detections):
            for b, d in enumerate(dets):
                res[f"{name}/det/{t}/{b}"] = torch.cat(
                    [d.boxes, d.scores[:, None], d.types[:, None].float()], 1).detach().numpy()
        if model.is_causal:
            model.eval()
            state = model.init_state(2)
            for frame in clip.frames:
                dets, state = model.step(frame, state)
            res[f"{name}/step"] = torch.cat([dets[0].boxes, dets[0].scores[:, None]], 1).numpy()
    if save_weights:
        torch.save(saved, save_weights)
    np.savez(out, **res)
    print(f"{len(res)} arrays -> {out}")


def diff(a: str, b: str) -> int:
    import numpy as np

    x, y = np.load(a), np.load(b)
    keys = sorted(set(x) | set(y))
    bad = [k for k in keys if k not in x or k not in y or x[k].shape != y[k].shape or not np.array_equal(x[k], y[k])]
    print(f"{len(keys)} arrays, {len(bad)} differ" + (": " + ", ".join(bad[:10]) if bad else " (bit-identical)"))
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("out")
    d.add_argument("--root", default=str(Path.cwd()))
    d.add_argument("--save-weights", help="also save each config's seeded weights here")
    d.add_argument("--load-weights", help="run with these weights (a --save-weights file) instead of the seeded ones")
    c = sub.add_parser("diff")
    c.add_argument("a")
    c.add_argument("b")
    args = ap.parse_args()
    if args.cmd == "dump":
        dump(args.out, args.root, args.save_weights, args.load_weights)
        return 0
    return diff(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
