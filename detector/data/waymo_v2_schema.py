"""Column names of the Waymo Open Dataset v2 components that LiDAR 3D detection reads.

A v2 dataset is ``<root>/<split>/<component>/<segment_context_name>.parquet``; each component's
columns are the flattened fields of its dataclass in ``waymo_open_dataset.v2`` (``key.*`` for the
keys, ``[ComponentClass].field.subfield`` for the rest). Shared by the reader
(``detector.data.waymo_v2``) and the writer of synthetic segments (``data_tools.waymo_v2_writer``).
"""

from __future__ import annotations

LIDAR = "lidar"
LIDAR_CALIBRATION = "lidar_calibration"
LIDAR_POSE = "lidar_pose"
VEHICLE_POSE = "vehicle_pose"
LIDAR_BOX = "lidar_box"
STATS = "stats"
#: Components the converter reads, in the order it opens them.
COMPONENTS = (LIDAR_CALIBRATION, VEHICLE_POSE, LIDAR_BOX, LIDAR_POSE, LIDAR)
#: Components without which no split converts; ``lidar_box`` is needed too except for ``testing``.
REQUIRED = (LIDAR_CALIBRATION, VEHICLE_POSE, LIDAR_POSE, LIDAR)
UNLABELED_SPLITS = ("testing",)

KEY_SEGMENT = "key.segment_context_name"
KEY_TIMESTAMP = "key.frame_timestamp_micros"
KEY_LASER = "key.laser_name"
KEY_OBJECT = "key.laser_object_id"

# lidar (LiDARComponent): range images, [H, W, 4] range, intensity, elongation, is_in_nlz
LIDAR_RETURN = ("[LiDARComponent].range_image_return1", "[LiDARComponent].range_image_return2")
# lidar_pose (LiDARPoseComponent): the TOP lidar's per-pixel pose, [H, W, 6] roll, pitch, yaw, x, y, z
POSE_RETURN1 = "[LiDARPoseComponent].range_image_return1"
VALUES, SHAPE = ".values", ".shape"

# lidar_calibration (LiDARCalibrationComponent), one row per segment and laser
EXTRINSIC = "[LiDARCalibrationComponent].extrinsic.transform"
INCLINATION_MIN = "[LiDARCalibrationComponent].beam_inclination.min"
INCLINATION_MAX = "[LiDARCalibrationComponent].beam_inclination.max"
INCLINATION_VALUES = "[LiDARCalibrationComponent].beam_inclination.values"

# vehicle_pose (VehiclePoseComponent), one row per frame
WORLD_FROM_VEHICLE = "[VehiclePoseComponent].world_from_vehicle.transform"

# lidar_box (LiDARBoxComponent), one row per label
_BOX = "[LiDARBoxComponent]"
BOX_FIELDS = tuple(f"{_BOX}.box.{f}" for f in ("center.x", "center.y", "center.z", "size.x", "size.y", "size.z",
                                               "heading"))
BOX_TYPE = f"{_BOX}.type"
BOX_NUM_POINTS = f"{_BOX}.num_lidar_points_in_box"
BOX_NUM_TOP_POINTS = f"{_BOX}.num_top_lidar_points_in_box"
BOX_SPEED = tuple(f"{_BOX}.speed.{a}" for a in "xyz")
BOX_ACCELERATION = tuple(f"{_BOX}.acceleration.{a}" for a in "xyz")
BOX_DIFFICULTY_DETECTION = f"{_BOX}.difficulty_level.detection"
BOX_DIFFICULTY_TRACKING = f"{_BOX}.difficulty_level.tracking"

# stats (StatsComponent), one row per frame; not needed for detection
_STATS = "[StatsComponent]"
STATS_FIELDS = tuple(f"{_STATS}.{f}" for f in ("time_of_day", "location", "weather"))
STATS_LIDAR_COUNTS = (f"{_STATS}.lidar_object_counts.types", f"{_STATS}.lidar_object_counts.counts")
STATS_CAMERA_COUNTS = (f"{_STATS}.camera_object_counts.types", f"{_STATS}.camera_object_counts.counts")
