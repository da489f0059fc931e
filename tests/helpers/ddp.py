"""DDP on the CPU for the tests: ``n`` real processes started side by side as a cluster launcher
(torchrun, SLURM) would start them, each with its own ``LOCAL_RANK`` (Lightning's
``LightningEnvironment``; gloo), so that one rank's failure cannot end the others for them: a rank
left at a barrier shows as a timeout.

    ranks = launch_ranks([sys.executable, script], 2, timeout=300)   # [(returncode, stdout, stderr)]
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time

from tests.helpers.paths import REPO_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_ranks(cmd: list[str], n: int, timeout: float, env: dict | None = None) -> list[tuple[int | None, str, str]]:
    """Run ``cmd`` as ranks 0..n-1 of one job; ``(returncode, stdout, stderr)`` per rank, returncode None for a
    rank still running at ``timeout`` s (then killed). Output goes through files: a rank blocked on a full
    pipe would stall the others at their next collective."""
    port = str(free_port())
    with tempfile.TemporaryDirectory() as tmp:
        procs, files = [], []
        for rank in range(n):
            e = {**os.environ, **(env or {}), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
                 "LOCAL_RANK": str(rank), "NODE_RANK": "0", "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
            fo, fe = (open(os.path.join(tmp, f"{rank}.{k}"), "w+") for k in ("out", "err"))
            files.append((fo, fe))
            procs.append(subprocess.Popen(cmd, cwd=REPO_ROOT, env=e, stdout=fo, stderr=fe, text=True))
        deadline = time.monotonic() + timeout
        codes: list[int | None] = []
        for p in procs:
            try:
                codes.append(p.wait(timeout=max(deadline - time.monotonic(), 1.0)))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                codes.append(None)
        out = []
        for code, (fo, fe) in zip(codes, files):
            fo.seek(0)
            fe.seek(0)
            out.append((code, fo.read(), fe.read()))
            fo.close()
            fe.close()
        return out
