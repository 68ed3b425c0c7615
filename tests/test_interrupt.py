"""Ctrl-C, as a terminal sends it (SIGINT to the whole foreground process group): the
command stops at once, says what it kept, and, where the run can go on, prints the exact
command that resumes it; that command works."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

from tests.helpers import FIB, STOP

# Quick on a task's program (the meta-utility's tests), slow on an improver (the round
# that proposes generation 1): the interrupt lands inside that round.
SLOW_ON_ITSELF = """import time


def improve_algorithm(initial_solution, utility, language_model):
    if "def improve_algorithm" in initial_solution:
        start = time.monotonic()
        while time.monotonic() - start < 6:
            pass
    return initial_solution
"""


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    return subprocess.Popen(
        [*STOP, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a group of its own, as a terminal's foreground job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for(path_of, timeout_s: float = 120) -> Path:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = path_of()
        if found is not None:
            return found
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


def test_ctrl_c_in_self_improve_prints_the_command_that_resumes_it(tmp_path: Path):
    (tmp_path / "improver.py").write_text(SLOW_ON_ITSELF)
    (tmp_path / "script.json").write_text(json.dumps(["no code"]))
    args = ["self-improve", "--improver", "improver.py", "--script", "script.json"]
    args += ["--tasks", "parity", "--rounds", "1", "--tests", "1"]
    process = _start(args, tmp_path)
    runs = tmp_path / "runs"
    gen0 = _wait_for(lambda: next(runs.glob("*/generations/gen_000.json"), None))
    time.sleep(1.0)  # inside round 1, whose improver runs for 6 s
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=60)
    run_id = gen0.parent.parent.name
    lines = [line for line in err.splitlines() if line.strip()]
    assert process.returncode == 130, err
    assert any(line.startswith(f"Run {run_id} ") for line in lines[:3]), err  # first thing
    assert lines[-1].startswith("interrupted:") and "keeps 1 generation" in lines[-1], err
    resume = lines[-1].split("resume with: ", 1)[1]
    assert resume == f"stop self-improve --resume {run_id}"
    assert "Traceback" not in err and out == ""
    events = (runs / run_id / "events.jsonl").read_text()
    assert '"error":"KeyboardInterrupt' in events.replace(" ", "")

    resumed = subprocess.run(
        [*STOP, *shlex.split(resume)[1:], "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    generations = json.loads(resumed.stdout)["generations"]
    assert [g["gen"] for g in generations] == [0, 1]


def test_ctrl_c_in_improve_says_what_was_kept(tmp_path: Path):
    endless = "def improve_algorithm(initial_solution, utility, language_model):\n"
    endless += "    utility(initial_solution)\n    while True:\n        pass\n"
    (tmp_path / "improver.py").write_text(endless)
    (tmp_path / "script.json").write_text(json.dumps(["no code"]))
    args = ["improve", "--target", str(FIB), "--improver", "improver.py"]
    process = _start([*args, "--script", "script.json"], tmp_path)
    runs = tmp_path / "runs"
    _wait_for(lambda: next(runs.glob("*/candidates/000.json"), None))
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=60)
    lines = [line for line in err.splitlines() if line.strip()]
    assert process.returncode == 130, err
    assert lines[-1].startswith("interrupted: run ") and "1 scored candidate" in lines[-1]
    assert "Traceback" not in err


def test_a_killed_run_is_not_shown_as_running(tmp_path: Path):
    (tmp_path / "improver.py").write_text(SLOW_ON_ITSELF)
    (tmp_path / "script.json").write_text(json.dumps(["no code"]))
    args = ["self-improve", "--improver", "improver.py", "--script", "script.json"]
    process = _start([*args, "--tasks", "parity", "--rounds", "1", "--tests", "1"], tmp_path)
    runs = tmp_path / "runs"
    _wait_for(lambda: next(runs.glob("*/generations/gen_000.json"), None))
    listed = subprocess.run(
        [*STOP, "runs", "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert json.loads(listed.stdout)[0]["status"] == "running"
    os.killpg(process.pid, signal.SIGKILL)  # no handler runs: nothing goes in the log
    process.communicate(timeout=60)
    listed = subprocess.run(
        [*STOP, "runs", "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert json.loads(listed.stdout)[0]["status"] == "killed", listed.stdout
