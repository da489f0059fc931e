"""The tracker's settings (the ``tracker`` Hydra group builds this with ``_target_``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from waymo_open_dataset import label_pb2

Label = label_pb2.Label

#: Class names of the settings, as the configs spell them, and their Waymo ``Label.Type``.
CLASS_TYPES = {"vehicle": Label.TYPE_VEHICLE, "pedestrian": Label.TYPE_PEDESTRIAN, "sign": Label.TYPE_SIGN,
               "cyclist": Label.TYPE_CYCLIST}


def _per_type(values: Mapping, key: str) -> dict[int, float]:
    out = {}
    for name, v in dict(values).items():
        if name not in CLASS_TYPES:
            raise ValueError(f"tracker.{key}.{name}: unknown class (expected one of {', '.join(CLASS_TYPES)})")
        out[CLASS_TYPES[name]] = float(v)
    return out


@dataclass
class TrackerConfig:
    """What the tracker does; see ``detector/tracking/tracker.py``.

    ``gate_m``: the largest distance (metres, bird's eye) between a track's predicted centre and a detection
    it may take, per class; ``birth_score``: an unmatched detection at or above it starts a track (below, it
    gets an id of its own that nothing continues); ``max_coast_s``: how long a track is kept without a
    detection (occlusions) before it dies; ``process_noise``/``measurement_noise``: the constant-velocity
    Kalman filter's acceleration spectral density (m^2/s^3) and centre noise (m^2); ``max_gap_s``: a longer
    timestamp gap ends every track; ``motion_heading``: turn moving boxes to face their track's motion
    (``detector/models/motion_heading.py``); None: as the model says (``Detector.motion_heading``),
    else on.
    """

    enabled: bool = True
    gate_m: Mapping = field(default_factory=lambda: {"vehicle": 2.5, "pedestrian": 1.0, "sign": 1.0,
                                                     "cyclist": 1.5})
    birth_score: float = 0.3
    max_coast_s: float = 0.5
    process_noise: float = 4.0
    measurement_noise: float = 0.04
    max_gap_s: float = 0.5
    motion_heading: bool | None = None
    #: classes that may continue each other's tracks (a detector confuses pedestrians and cyclists), at
    #: ``class_penalty`` metres above their distance
    class_groups: Sequence = (("pedestrian", "cyclist"),)
    class_penalty: float = 0.5
    #: a detection whose centre lies this close (metres, per class) to a higher-scoring one of its class
    #: group is a duplicate of it: it continues and starts no track, gets an id of its own and, in the
    #: stream's output, its score times ``duplicate_score_scale`` (1: unchanged)
    duplicate_m: Mapping = field(default_factory=lambda: {"vehicle": 1.0, "pedestrian": 0.3, "cyclist": 0.8})
    duplicate_score_scale: float = 0.1

    def __post_init__(self) -> None:
        self.gates = _per_type(self.gate_m, "gate_m")
        self.duplicate_radius = _per_type(self.duplicate_m, "duplicate_m")
        if not 0 <= float(self.duplicate_score_scale) <= 1:
            raise ValueError(f"tracker.duplicate_score_scale={self.duplicate_score_scale!r}: must lie in [0, 1]")
        grouped: list[tuple[int, ...]] = []
        for group in self.class_groups:
            names = [group] if isinstance(group, str) else list(group)
            bad = [n for n in names if n not in CLASS_TYPES]
            if bad:
                raise ValueError(f"tracker.class_groups: unknown class {bad[0]!r} (expected {', '.join(CLASS_TYPES)})")
            grouped.append(tuple(CLASS_TYPES[n] for n in names))
        alone = [t for t in self.gates if not any(t in g for g in grouped)]
        self.groups = tuple(grouped) + tuple((t,) for t in alone)
        for name in ("birth_score", "max_coast_s", "process_noise", "measurement_noise", "max_gap_s",
                     "class_penalty"):
            if not float(getattr(self, name)) >= 0:
                raise ValueError(f"tracker.{name}={getattr(self, name)!r}: must be >= 0")
        if any(g <= 0 for g in self.gates.values()):
            raise ValueError(f"tracker.gate_m: every gate must be > 0, got {dict(self.gate_m)}")


def tracker_config(node: Any) -> TrackerConfig | None:
    """The ``tracker`` config node built (``_target_``) into a ``TrackerConfig``; None when absent. Bad keys or
    values raise ``InputError`` naming them."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from detector.errors import InputError

    if node is None:
        return None
    try:
        config = instantiate(node, _convert_="all")
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        raise InputError(f"tracker: {cause}") from exc
    if not isinstance(config, TrackerConfig):
        raise InputError(f"tracker._target_ must build a detector.tracking.TrackerConfig, got {type(config).__name__}")
    return config
