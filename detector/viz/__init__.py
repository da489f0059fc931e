"""The viewer: scenes of frames, boxes and state voxels (``scene``), cameras (``camera``), Open3D
offscreen rendering to PNG/GIF/MP4 (``headless``), the interactive player (``interactive``), the
matplotlib bird's-eye plot (``bev``) and the inputs (``sources``). Open3D is imported only where used.
The command line is ``python -m detector.visualize`` (docs/VISUALIZE.md)."""
