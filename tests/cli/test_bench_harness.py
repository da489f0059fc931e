"""scripts/bench/_harness.py: what the benchmarks share (timing, commands, tables, reports)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.bench import _harness as h
from tests.helpers.paths import REPO_ROOT


def test_one_thread_refuses_once_numpy_is_loaded():
    import numpy  # noqa: F401  (the test process has it)

    with pytest.raises(RuntimeError, match="numpy"):
        h.one_thread()


def test_one_thread_pins_the_runtimes_before_they_load():
    code = ("import os; from scripts.bench._harness import one_thread, THREAD_VARIABLES; one_thread(); "
            "import numpy; print([os.environ[v] for v in THREAD_VARIABLES])")
    env = {k: v for k, v in os.environ.items() if k not in h.THREAD_VARIABLES}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env={**env, "PYTHONPATH": REPO_ROOT},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['1', '1', '1']"


def test_best_of_is_the_shortest_call():
    durations = iter([0.03, 0.0, 0.02])

    def call():
        import time

        time.sleep(next(durations))

    assert h.best_of(call, 3) < 0.015
    with pytest.raises(ValueError, match="repeats=0"):
        h.best_of(call, 0)


def test_timed_command_times_it_and_passes_the_environment(monkeypatch):
    monkeypatch.setenv("BENCH_DROP_ME", "x")
    code = "import os; print(os.environ.get('BENCH_DROP_ME'), os.environ['BENCH_ADDED'])"
    seconds, proc = h.timed_command([sys.executable, "-c", code], env={"BENCH_ADDED": "y"}, unset=("BENCH_DROP_ME",))
    assert seconds > 0
    assert proc.stdout.strip() == "None y"


def test_timed_command_fails_loudly_with_the_output():
    with pytest.raises(RuntimeError, match=r"exited 3 after .* s:\n.*the reason"):
        h.timed_command([sys.executable, "-c", "import sys; print('the reason'); sys.exit(3)"])


def test_markdown_table():
    assert h.markdown_table(["a", "b"], [[1, "x"], [2.5, "y"]]) == "| a | b |\n| --- | --- |\n| 1 | x |\n| 2.5 | y |"
    with pytest.raises(ValueError, match="row 1 has 1 cells, the header 2"):
        h.markdown_table(["a", "b"], [[1, 2], [3]])


def test_write_report_writes_both_and_keeps_the_old_one_on_failure(tmp_path: Path):
    out = tmp_path / "r.json"
    h.write_report(out, {"ap": 0.5}, "| a |\n| --- |\n| 1 |\n")
    assert json.loads(out.read_text()) == {"ap": 0.5}
    assert (tmp_path / "r.md").read_text() == "| a |\n| --- |\n| 1 |\n"
    with pytest.raises(TypeError):
        h.write_report(out, {"ap": object()})  # not JSON: nothing replaced, nothing left behind
    assert json.loads(out.read_text()) == {"ap": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.md"]


def test_child_json_returns_the_last_line_and_names_a_missing_result():
    code = "import json; print('progress'); print(json.dumps({'peak_mb': 12.5}))"
    assert h.child_json([sys.executable, "-c", code]) == {"peak_mb": 12.5}
    with pytest.raises(RuntimeError, match="no JSON on its last line of output:\n.*done"):
        h.child_json([sys.executable, "-c", "print('done')"])
