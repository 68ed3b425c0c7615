"""Backends and utilities from outside stop: a backend is one module found through the
`stop.backends` entry-point group, with options of its own; a utility file may declare
options that `--utility-option` fills in, validated."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests import replies
from tests.helpers import FIB, run_stop

# A third party's backend, whole: one module. It answers every prompt with the program
# its `reply_file` option names, and counts what it was asked in `log_file`.
ECHO_BACKEND = """
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from stop.llm import BackendPlugin
from stop.llm.base import Completion


class EchoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reply_file: Path
    log_file: Path
    repeat: int = 1


class EchoBackend:
    def __init__(self, options: EchoOptions) -> None:
        self.options = options
        self.id = f"echo:{options.reply_file}"

    def generate(self, prompts):
        with open(self.options.log_file, "a") as log:
            for prompt in prompts:
                log.write(prompt.message[:40].replace("\\n", " ") + "\\n")
        text = self.options.reply_file.read_text() * self.options.repeat
        return [Completion(text=text, prompt_tokens=1, completion_tokens=1) for _ in prompts]


PLUGIN = BackendPlugin("echo", EchoOptions, EchoBackend)
"""


@pytest.fixture
def echo_package(tmp_path: Path) -> dict[str, str]:
    """Install the echo backend the way pip would: a module and a dist-info folder whose
    entry_points.txt names it, on the path. Returns the environment that sees it."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "echo_backend.py").write_text(ECHO_BACKEND)
    info = site / "echo_backend-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-backend\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[stop.backends]\necho = echo_backend:PLUGIN\n")
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    return {"PYTHONPATH": path}


def test_a_backend_from_an_entry_point_runs_a_whole_improve(tmp_path, echo_package):
    (tmp_path / "reply.md").write_text(replies.MEMO)
    proc = run_stop(
        "improve",
        "--target",
        str(FIB),
        "--backend",
        "echo",
        "--backend-option",
        f"reply_file={tmp_path / 'reply.md'}",
        "--backend-option",
        f"log_file={tmp_path / 'asked.log'}",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--json",
        cwd=tmp_path,
        env=echo_package,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["improved"] and "lru_cache" in Path(out["best_path"]).read_text()
    # It was asked for every sample, and the run records its options as validated.
    asked = (tmp_path / "asked.log").read_text().splitlines()
    assert len(asked) == out["usage"]["calls"] > 0
    config = json.loads((Path(out["run_dir"]) / "config.json").read_text())
    assert config["model"] == {
        "backend": "echo",
        "options": {
            "reply_file": str(tmp_path / "reply.md"),
            "log_file": str(tmp_path / "asked.log"),
        },
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend-option", "colour=red"], "the echo backend takes no --colour"),
        (["--backend-option", "repeat=twice"], "--repeat: Input should be a valid integer"),
        (["--backend-option", "noequals"], "is not KEY=VALUE"),
        (["--base-url", "http://127.0.0.1:9"], "the echo backend takes no --base-url"),
        ([], "the echo backend needs --reply-file"),
    ],
)
def test_a_plugin_backends_options_are_checked_before_anything_runs(
    tmp_path, echo_package, args, message
):
    reply = ["--backend-option", f"reply_file={tmp_path / 'r.md'}"] if args else []
    log = ["--backend-option", f"log_file={tmp_path / 'l.log'}"] if args else []
    proc = run_stop(
        "improve",
        "--target",
        str(FIB),
        "--backend",
        "echo",
        *reply,
        *log,
        *args,
        "--runs-dir",
        str(tmp_path / "runs"),
        cwd=tmp_path,
        env=echo_package,
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_built_in_backends_refuse_flags_they_do_not_take(tmp_path):
    proc = run_stop(
        "improve",
        "--target",
        str(FIB),
        "--backend",
        "local",
        "--base-url",
        "http://x:1",
        "--runs-dir",
        str(tmp_path / "runs"),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "the local backend takes no --base-url" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_unknown_backends_are_named_with_the_registered_ones(tmp_path, echo_package):
    proc = run_stop(
        "improve", "--target", str(FIB), "--backend", "nope", cwd=tmp_path, env=echo_package
    )
    assert proc.returncode == 2
    assert "unknown backend 'nope'; choose one of echo, local, openai, scripted" in proc.stderr


# A user's utility with options of its own: it scores a program by whether fib(n) comes
# out right, for the n its `n` option names, and `bonus` more when it does.
OPTIONED_UTILITY = """
from pydantic import BaseModel, ConfigDict

from stop.sandbox.runner import Limits
from stop.scoring.utility import Evaluation, Utility


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = 10
    bonus: float = 0.0


class FibAt(Utility):
    name = "fib_at"
    description = "fib(n) must be right"

    def __init__(self, n, bonus):
        super().__init__()
        self.n, self.bonus = n, bonus

    def evaluate(self, program):
        payload = {"code": program, "entry": "fib", "inputs": [[self.n]], "repeat": 1}
        result = self.run_job("call", payload, Limits(wall_s=10))
        reply = result.value if isinstance(result.value, dict) else {}
        right = reply.get("outputs") == [[0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89][self.n]]
        score = 1.0 + self.bonus if right else 0.0
        return Evaluation(status="ok", score=score, seconds=result.wall_s, metrics={"n": self.n})


def build(target, options):
    return FibAt(options.custom["n"], options.custom["bonus"])
"""


def test_a_utility_declares_options_and_gets_them_validated(tmp_path, script):
    utility = tmp_path / "fib_at.py"
    utility.write_text(OPTIONED_UTILITY)
    common = [
        "improve",
        "--target",
        str(FIB),
        "--utility",
        str(utility),
        "--script",
        str(script([replies.MEMO])),
        "--runs-dir",
        str(tmp_path / "runs"),
    ]
    proc = run_stop(
        *common, "--utility-option", "n=11", "--utility-option", "bonus=0.5", "--json", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["baseline_score"] == 1.5  # fib(11) right, with the bonus it was given
    assert {c["evaluation"]["metrics"]["n"] for c in out["candidates"]} == {11.0}
    config = json.loads((Path(out["run_dir"]) / "config.json").read_text())
    # Recorded as given; validated again wherever the run's utility is built.
    assert config["utility_options"]["custom"] == {"n": "11", "bonus": "0.5"}

    for option, message in [
        ("n=eleven", "--utility-option n: Input should be a valid integer"),
        ("colour=red", "--utility-option colour: Extra inputs are not permitted"),
    ]:
        bad = run_stop(*common, "--utility-option", option, cwd=tmp_path)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1

    speed = run_stop(*common[:3], "--utility", "speed", "--utility-option", "n=1", cwd=tmp_path)
    assert speed.returncode == 2
    assert "utility speed takes no --utility-option" in speed.stderr
