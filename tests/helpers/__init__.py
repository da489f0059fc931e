"""Shared test builders (datasets, scenes, stores, metric cases, the official evaluator); locations in paths.py."""
