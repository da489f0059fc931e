"""Config values checked where the entry points read them: the type and range of each value, with
the key named, before any data is read or any Lightning object is built.

Without these, ``trainer.max_epochs=abc`` surfaces as a ``TypeError`` deep in Lightning and
``data.batch_size=0`` as a sampler error; here they are one ``InputError`` that names the key.
Keys absent from a config are not checked (each command composes its own).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from detector.errors import InputError

__all__ = ["ConfigValueError", "check_config", "TRAIN_CHECKS", "EVALUATE_CHECKS", "PREDICT_CHECKS",
           "SYNTHESIZE_CHECKS", "CONVERT_CHECKS"]

_ABSENT = object()


class ConfigValueError(InputError):
    """A config value of the wrong type or out of range; the message names the key."""


Check = Callable[[object], str | None]  # None when fine, else what was expected


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def whole(minimum: int, note: str = "", nullable: bool = False) -> Check:
    def check(v):
        if v is None and nullable:
            return None
        if _is_int(v) and v >= minimum:
            return None
        return f"a whole number >= {minimum}{note}{', or null' if nullable else ''}"
    return check


def number(minimum: float, *, strict: bool = False, maximum: float | None = None, nullable: bool = False) -> Check:
    def check(v):
        if v is None and nullable:
            return None
        if _is_number(v) and (v > minimum if strict else v >= minimum) and (maximum is None or v <= maximum):
            return None
        rng = f"{'>' if strict else '>='} {minimum:g}" + (f" and <= {maximum:g}" if maximum is not None else "")
        return f"a number {rng}{', or null' if nullable else ''}"
    return check


def one_of(*choices) -> Check:
    def check(v):
        return None if v in choices else "one of " + ", ".join(repr(c) for c in choices)
    return check


def batches_limit(v) -> str | None:
    """Lightning's ``limit_*_batches``: a fraction in [0, 1] or a whole number of batches."""
    if (_is_int(v) and v >= 0) or (_is_number(v) and 0.0 <= v <= 1.0):
        return None
    return "a fraction in [0, 1] or a whole number of batches >= 0"


def trains_batches(v) -> str | None:
    """``trainer.limit_train_batches``: as ``batches_limit``, but 0 would train nothing."""
    if (_is_int(v) and v >= 1) or (_is_number(v) and 0.0 < v <= 1.0):
        return None
    return "a fraction in (0, 1] or a whole number of batches >= 1 (0 trains nothing)"


def limit(note: str) -> Check:
    """``trainer.max_epochs``/``max_steps``: -1 (no limit), null where Lightning allows it, or >= 1."""
    def check(v):
        if v is None and "null" in note:
            return None
        if _is_int(v) and (v >= 1 or v == -1):
            return None
        return f"a whole number >= 1, or -1 (no limit){note}; 0 trains nothing"
    return check


def point_range(v) -> str | None:
    if (isinstance(v, (list, tuple)) and len(v) == 6 and all(_is_number(x) for x in v)
            and all(v[i + 3] > v[i] for i in range(3))):
        return None
    return "[x_min, y_min, z_min, x_max, y_max, z_max] (metres) with each max > min"


def positive_numbers(n: int) -> Check:
    def check(v):
        if isinstance(v, (list, tuple)) and len(v) == n and all(_is_number(x) and x > 0 for x in v):
            return None
        return f"a list of {n} numbers > 0"
    return check


def scale_range(v) -> str | None:
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_number(x) for x in v) and 0 < v[0] <= v[1]:
        return None
    return "[low, high] with 0 < low <= high"


def non_negative_numbers(n: int) -> Check:
    def check(v):
        if isinstance(v, (list, tuple)) and len(v) == n and all(_is_number(x) and x >= 0 for x in v):
            return None
        return f"a list of {n} numbers >= 0"
    return check


def devices(v) -> str | None:
    if v == "auto" or (_is_int(v) and (v >= 1 or v == -1)):
        return None
    if isinstance(v, (list, tuple, ListConfig)) and v and all(_is_int(d) and d >= 0 for d in v):
        return None
    if isinstance(v, str) and v.replace(",", "").strip().isdigit():
        return None
    return "'auto', a number of devices >= 1 (-1: all), or a list of device indices"


def classes(v) -> str | None:
    if isinstance(v, (list, tuple, ListConfig)) and len(v) and all(_is_int(c) and 1 <= c <= 4 for c in v):
        return None
    return "a non-empty list of Waymo Label.Type ids in 1..4 (1 vehicle, 2 pedestrian, 3 sign, 4 cyclist)"


_DATA = [
    ("data.point_range", point_range),
    ("data.seed", whole(0)),
    ("data.augment.scale", scale_range),
    ("data.augment.rotation", number(0.0)),
    ("data.augment.flip_prob", number(0.0, maximum=1.0)),
    ("data.augment.translate_std", non_negative_numbers(3)),
    ("model.voxelizer.voxel_size", positive_numbers(3)),
    ("data.batch_size", whole(1)),
    ("data.clip_length", whole(1)),
    ("data.stride", whole(1)),
    ("data.num_workers", whole(0)),
    ("data.max_gap_s", number(0.0, strict=True, nullable=True)),
    ("data.classes", classes),
    ("torch_threads", whole(1, nullable=True)),
    ("tf32", one_of(True, False, None)),
]
TRAIN_CHECKS: list[tuple[str, Check]] = [
    ("seed", whole(0)),
    ("trainer.max_epochs", limit(", or null")),
    ("trainer.max_steps", limit("")),
    ("trainer.devices", devices),
    ("trainer.num_nodes", whole(1)),
    ("trainer.check_val_every_n_epoch", whole(1, nullable=True)),
    ("trainer.log_every_n_steps", whole(1)),
    ("trainer.accumulate_grad_batches", whole(1)),
    ("trainer.gradient_clip_val", number(0.0, nullable=True)),
    ("trainer.limit_train_batches", trains_batches),
    ("trainer.limit_val_batches", batches_limit),
    ("module.lr", number(0.0, strict=True)),
    ("module.weight_decay", number(0.0)),
    ("module.scheduler", one_of("onecycle", "cosine", "none")),
    ("module.warmup_pct", number(0.0, maximum=1.0)),
    ("checkpoint.every_n_train_steps", whole(1, nullable=True)),
    ("checkpoint.mode", one_of("max", "min")),
    ("resume", one_of(True, False)),
    *_DATA,
]
EVALUATE_CHECKS: list[tuple[str, Check]] = [
    ("max_frames", whole(1, nullable=True)),
    ("reset_every", whole(1, " (frames)", nullable=True)),
    ("split", one_of("training", "validation", "testing")),
    *_DATA,
]
PREDICT_CHECKS: list[tuple[str, Check]] = [*_DATA]
CONVERT_CHECKS: list[tuple[str, Check]] = [
    ("workers", whole(1)),
    ("second_return", one_of(True, False)),
    ("progress", one_of(True, False)),
]
SYNTHESIZE_CHECKS: list[tuple[str, Check]] = [
    ("seed", whole(0)),
    ("segments", whole(0)),
    ("val_segments", whole(0)),
    ("frames", whole(1)),
    ("workers", whole(1)),
    ("format", one_of("v1", "v2", "both")),
    ("progress", one_of(True, False)),
    ("lidar", one_of("demo", "waymo")),
    ("v2_row_group_frames", whole(1)),
    ("top_height", whole(1, nullable=True)),
    ("top_width", whole(1, nullable=True)),
    ("zlib_level", whole(0)),
    ("object_range", number(0.0, strict=True)),
    ("label_range", number(0.0, strict=True)),
    ("vehicle_density", number(0.0)),
    ("wobble", number(0.0)),
    ("nlz_prob", number(0.0, maximum=1.0)),
    ("noise.range_noise", number(0.0)),
    *[(f"noise.{k}", number(0.0, maximum=1.0))
      for k in ("pixel_dropout", "beam_dropout", "sector_dropout", "second_return")],
]


def check_config(cfg: DictConfig, checks: Sequence[tuple[str, Check]]) -> None:
    """Raise ``ConfigValueError`` for the first value that fails its check, naming the key."""
    for key, check in checks:
        try:
            value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
        except OmegaConfBaseException as e:  # an interpolation that does not resolve
            raise ConfigValueError(f"{key}: cannot be resolved ({e})") from e
        if value is _ABSENT:
            continue
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=True)
        expected = check(value)
        if expected is not None:
            raise ConfigValueError(f"{key}={value!r}: expected {expected}; set it on the command line as {key}=...")
