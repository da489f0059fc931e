"""Two converters writing one frame store: each segment is claimed before it is written, so neither job
fails, no segment is written twice at once, and the store equals one written by a single run."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from data_tools.claims import SegmentBusy, claim_segment, lock_path
from data_tools.convert_waymo import convert, summary
from data_tools.synth_segment import SegmentConfig
from data_tools.synthesize import synthesize
from detector.data.frame_store import list_segments
from tests.helpers.paths import REPO_ROOT


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """Three training segments of 4 frames (the issue's race: a 3-segment source)."""
    root = tmp_path_factory.mktemp("race") / "records"
    synthesize(root, 3, 0, 11, SegmentConfig(frames=4, top_width=512), workers=1)
    return root


@pytest.fixture(scope="module")
def reference(records, tmp_path_factory):
    dst = tmp_path_factory.mktemp("race_ref") / "store"
    assert all(r.status == "converted" for r in convert(records, dst))
    return _digest(dst)


def _digest(store: Path) -> dict[str, str]:
    return {str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store.rglob("*")) if p.is_file()}


def _env() -> dict:
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def _converter(records: Path, dst: Path, run: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "data_tools.convert_waymo", f"src={records}", f"dst={dst}",
                             "workers=1", "progress=false", f"hydra.run.dir={run}", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())


@pytest.mark.parametrize("attempt", range(2))
def test_two_converters_into_one_store(records, reference, tmp_path, attempt):
    """Two real processes started together on the same source and destination: both exit 0, the store is
    complete and byte-identical to a single run's, no temporary or claim file is left."""
    dst = tmp_path / "store"
    procs = [_converter(records, dst, tmp_path / f"run{i}") for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "Traceback" not in err
    # between them every segment was converted once and skipped (or waited for) by the other
    said = "".join(o + e for o, e in outs)
    assert said.count("converted") >= 2
    assert _digest(dst) == reference
    assert not [p for p in dst.rglob(".*")], list(dst.rglob(".*"))


def test_a_held_segment_is_waited_for_then_skipped_or_left(records, reference, tmp_path):
    """A claim held by another process: ``busy=skip`` leaves the segment to it and says who holds it;
    ``busy=wait`` waits until it is released, then converts it (the holder wrote nothing)."""
    dst = tmp_path / "store"
    convert(records, dst)  # to learn the segment names
    names = sorted(s.name for s in list_segments(dst, "training"))
    shutil.rmtree(dst / "training")
    (dst / "training").mkdir()

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from data_tools.claims import claim_segment; "
        f"c = claim_segment({str(dst / 'training')!r}, {names[1]!r}); print('held', flush=True); time.sleep(600)")],
        stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        results = convert(records, dst, busy="skip")
        busy = [r for r in results if r.status == "busy"]
        assert [r.segment for r in busy] == [names[1]]
        assert f"pid {holder.pid}" in busy[0].error and str(lock_path(dst / "training", names[1])) in busy[0].error
        assert "1 left to another converter" in summary(results)
        assert not (dst / "training" / names[1]).exists()

        threading.Timer(1.0, lambda: holder.send_signal(signal.SIGKILL)).start()  # the holder dies: lock freed
        t0 = time.time()
        results = convert(records, dst, busy="wait")
        assert time.time() - t0 >= 0.9
        assert [r.status for r in results] == ["skipped", "converted", "skipped"]
    finally:
        holder.kill()
        holder.wait()
    assert _digest(dst) == reference  # the dead holder's claim file was taken over and removed


def test_claim_is_exclusive_and_freed_by_death(tmp_path):
    with claim_segment(tmp_path, "seg"):
        with pytest.raises(SegmentBusy, match=rf"{tmp_path / 'seg'}: being converted by .* pid {os.getpid()}"):
            # flock locks belong to the open file: a second open in this process is refused like another's
            claim_segment(tmp_path, "seg")
    assert not lock_path(tmp_path, "seg").exists()
    claim_segment(tmp_path, "seg").release()


def test_stale_exclusive_claim_of_a_dead_process_is_taken_over(tmp_path):
    """The fallback without flock: a lock file whose holder on this machine is gone is stale."""
    import json
    import socket

    from data_tools.claims import _claim_exclusive

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = lock_path(tmp_path, "seg")
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "since": "then"}))
    claim = _claim_exclusive(path, "seg", wait=False, poll_s=0.01)
    assert json.loads(path.read_text())["pid"] == os.getpid()
    with pytest.raises(SegmentBusy, match=f"pid {os.getpid()}"):
        _claim_exclusive(path, "seg", wait=False, poll_s=0.01)
    claim.release()
    assert not path.exists()
