"""The viewer: scenes of frames, boxes and state voxels (``scene``), cameras (``camera``), Open3D
offscreen rendering to PNG/GIF/MP4 (``headless``), the interactive window (``interactive``) fed by the
on-demand frame loader (``loader``), the matplotlib bird's-eye plot (``bev``), the inputs (``sources``)
and a virtual X display for running the window without a screen (``xdisplay``). Open3D is imported
only where used. The command line is ``python -m detector.visualize`` (docs/VISUALIZE.md)."""
