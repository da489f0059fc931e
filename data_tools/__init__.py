"""Data tools: synthetic Waymo segments, conversion to the frame store, statistics."""
