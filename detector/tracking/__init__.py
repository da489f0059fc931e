"""Online multi-object tracking of the streaming detector's detections (``Stream`` runs it after decoding).

Split as SimpleTrack splits a tracker: the motion model (``motion``: constant-velocity Kalman filter), the
association (``association``: gated Hungarian on centre distance, per class), the life cycle
(``life_cycle``: birth on a score, coasting, death) and the ``Tracker`` that runs them frame by frame.
"""

from detector.tracking.config import CLASS_TYPES, TrackerConfig, tracker_config
from detector.tracking.tracker import HISTORY, Tracker, TrackState

__all__ = ["CLASS_TYPES", "HISTORY", "TrackState", "Tracker", "TrackerConfig", "tracker_config"]
