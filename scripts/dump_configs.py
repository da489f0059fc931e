"""Every composed config of a checkout, resolved, one JSON file each: to check that a config change keeps
the values (``diff``), e.g. against an older commit exported with ``git archive``.

    python scripts/dump_configs.py dump OUT [--source CHECKOUT]   # CHECKOUT: whose detector/ (default: this)
    python scripts/dump_configs.py diff BEFORE AFTER              # one line per changed key

Composes ``train``, ``evaluate`` and ``predict`` with no experiment and with each experiment, ``train``
with each model and trainer, and the data tools' and viewer's configs. The Hydra run folder is recorded
unresolved (its value holds the time).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXTRA = {"train": [], "evaluate": ["ckpt_path=x"], "predict": ["ckpt_path=x", "input=x"]}
OTHERS = {"convert_waymo": ["src=a", "dst=b"], "stats": ["dst=b"], "synthesize": ["out_dir=a"], "visualize": []}


def jobs(config_dir: Path) -> dict[str, tuple[str, list[str]]]:
    experiments = sorted(p.stem for p in (config_dir / "experiment").glob("*.yaml") if not p.stem.startswith("_"))
    out = {}
    for name, extra in EXTRA.items():
        for e in [None, *experiments]:
            out[f"{name}__{e}"] = (name, ([f"experiment={e}"] if e else []) + extra)
    for m in sorted(p.stem for p in (config_dir / "model").glob("*.yaml")):
        out[f"train__model_{m}"] = ("train", [f"model={m}"])
    for t in ("cpu", "gpu", "ddp"):
        out[f"train__trainer_{t}"] = ("train", [f"trainer={t}"])
    out.update({name: (name, ov) for name, ov in OTHERS.items()})
    return out


def dump(out: Path, source: str | None) -> int:
    sys.path.insert(0, str(Path(source or Path(__file__).resolve().parents[1]).resolve()))
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import detector

    try:  # checkouts whose configs need registered resolvers
        from detector.config import register_resolvers

        register_resolvers()
    except ImportError:
        pass
    out.mkdir(parents=True, exist_ok=True)
    todo = jobs(Path(detector.CONFIG_DIR))
    for key, (name, overrides) in todo.items():
        with initialize_config_dir(detector.CONFIG_DIR, version_base="1.3"):
            cfg = compose(name, overrides=overrides, return_hydra_config=True)
        hydra = {"run.dir": OmegaConf.to_container(cfg.hydra.run, resolve=False)["dir"],
                 "job.chdir": cfg.hydra.job.chdir, "output_subdir": cfg.hydra.output_subdir,
                 "job_logging": sorted(cfg.hydra.job_logging.get("handlers", {}).keys())}
        OmegaConf.set_struct(cfg, False)
        del cfg["hydra"]
        body = {"cfg": OmegaConf.to_container(cfg, resolve=True), "hydra": hydra}
        (out / f"{key}.json").write_text(json.dumps(body, indent=1, sort_keys=True))
    print(f"{len(todo)} configs of {detector.CONFIG_DIR} in {out}")
    return 0


def _flat(d, prefix: str = "") -> dict:
    if not isinstance(d, dict):
        return {prefix: d}
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else k))
    return out


def diff(before: Path, after: Path) -> int:
    names = sorted({p.name for p in before.glob("*.json")} | {p.name for p in after.glob("*.json")})
    changed = 0
    for n in names:
        if not (before / n).is_file() or not (after / n).is_file():
            print(f"{n[:-5]}: only in {'after' if (after / n).is_file() else 'before'}")
            changed += 1
            continue
        a, b = _flat(json.loads((before / n).read_text())), _flat(json.loads((after / n).read_text()))
        for k in sorted(set(a) | set(b)):
            x, y = a.get(k, "<absent>"), b.get(k, "<absent>")
            if x != y:
                print(f"{n[:-5]}  {k}: {x!r} -> {y!r}")
                changed += 1
    print(f"{changed} differences over {len(names)} configs")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("out", type=Path)
    d.add_argument("--source", default=None, help="the checkout whose detector package to import (default: this one)")
    c = sub.add_parser("diff")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    args = ap.parse_args(argv)
    return dump(args.out, args.source) if args.cmd == "dump" else diff(args.before, args.after)


if __name__ == "__main__":
    sys.exit(main())
