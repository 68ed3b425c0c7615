"""`stop improve` end to end: the core loop in-process and the CLI in a subprocess."""

from __future__ import annotations

import json
from pathlib import Path

from stop.defaults import LOCAL
from stop.records import CandidateRecord, ImproveConfig, ModelSettings
from tests import replies
from tests.helpers import FIB, improve_run, run_stop
from tests.openai_server import CannedServer

SECRET = "sk-test-do-not-leak-4242"


def _config(tmp_path: Path, script: Path | None = None, **kw) -> ImproveConfig:
    return ImproveConfig(
        target=FIB,
        model=ModelSettings(backend="scripted", script=script or tmp_path / "unused.json"),
        runs_dir=tmp_path / "runs",
        budget=kw.pop("budget", LOCAL.improve),
        **kw,
    )


def test_scripted_run_keeps_the_memoized_rewrite(tmp_path, script):
    result = improve_run(_config(tmp_path, script([replies.MEMO, replies.WRONG, replies.PROSE])))
    assert result.improved and result.status == "completed"
    assert "lru_cache" in Path(result.best_path).read_text()
    assert result.speedup is not None and result.speedup > 5
    statuses = sorted(c.evaluation.status for c in result.candidates)
    assert statuses == ["no_code", "ok", "ok", "wrong_answer"]
    # The run directory reads back into the same records.
    run = Path(result.run_dir)
    for path in sorted((run / "candidates").glob("*.json")):
        CandidateRecord.model_validate_json(path.read_text())
    assert ImproveConfig.model_validate_json((run / "config.json").read_text()).target == FIB
    events = [json.loads(line)["event"] for line in (run / "events.jsonl").read_text().splitlines()]
    assert events[0] == "started" and events[-1] == "finished"
    assert len((run / "llm.jsonl").read_text().splitlines()) == 4  # samples per call


def test_prompts_carry_the_program_and_the_utility_description(tmp_path, scripted_model):
    model = scripted_model([replies.PROSE])
    result = improve_run(_config(tmp_path), backend=model)
    assert not result.improved and result.speedup == 1.0
    # The seed improver asked for one batch, every sample with the program and the task.
    assert len(model.prompts) == LOCAL.improve.max_responses_per_call
    assert [p.sample for p in model.prompts] == list(range(len(model.prompts)))
    for prompt in model.prompts:
        assert "return fib(n - 1) + fib(n - 2)" in prompt.message
        assert "original time / new time" in prompt.message
    # And the run's log holds what the model was asked.
    exchange = json.loads((Path(result.run_dir) / "llm.jsonl").read_text().splitlines()[0])
    assert exchange["user"] == model.prompts[0].message


def test_improver_cannot_raise_its_own_budget(tmp_path, script):
    improver = tmp_path / "greedy.py"
    improver.write_text(
        "def improve_algorithm(initial_solution, utility, language_model):\n"
        "    utility.budget = 10**6\n"
        "    language_model.budget = 10**6\n"
        "    scores = []\n"
        "    for _ in range(10):\n"
        "        try:\n"
        "            scores.append(utility(initial_solution))\n"
        "        except Exception as exc:\n"
        "            scores.append(type(exc).__name__)\n"
        "    return initial_solution\n"
    )
    config = _config(
        tmp_path,
        script([replies.MEMO]),
        improver=str(improver),
        budget=LOCAL.improve.model_copy(update={"evaluations": 3}),
    )
    result = improve_run(config)
    assert result.utility_uses == 3
    assert len(result.candidates) == 3


def test_improver_that_returns_garbage_keeps_the_original(tmp_path, script):
    improver = tmp_path / "bad.py"
    improver.write_text(
        "def improve_algorithm(initial_solution, utility, language_model):\n"
        "    print('noise on stdout' * 1000)\n"
        "    return 42\n"
    )
    result = improve_run(_config(tmp_path, script([replies.MEMO]), improver=str(improver)))
    assert result.status == "improver_failed"
    assert "returned int" in (result.improver.error or "")
    assert not result.improved
    assert Path(result.best_path).read_text() == FIB.read_text()


def test_openai_cli_run_against_a_real_http_server(tmp_path):
    """The real openai client, over real HTTP, with one good reply among bad ones."""
    with CannedServer(replies.ALL) as server:
        args = ("improve", "--target", str(FIB), "--base-url", server.url, "--model", "canned")
        args += ("--samples", "6", "--budget", "7", "--json", "--runs-dir", str(tmp_path / "runs"))
        proc = run_stop(
            *args,
            cwd=tmp_path,
            env={"OPENAI_API_KEY": SECRET, "STOP_TEST_SECRET": SECRET},
        )
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        assert out["improved"] is True, [
            (c["evaluation"]["status"], c["evaluation"]["detail"]) for c in out["candidates"]
        ]
        assert out["speedup"] > 10
        assert out["best_score"] > out["baseline_score"]
        assert "lru_cache" in Path(out["best_path"]).read_text()
        statuses = {c["evaluation"]["status"] for c in out["candidates"]}
        assert statuses == {"ok", "wrong_answer", "timeout", "syntax_error", "no_code"}
        # Concurrent requests, each authorised with the host's key, one batch of six.
        assert len(server.requests) == 6
        assert all(r["auth"] == f"Bearer {SECRET}" for r in server.requests)
        assert all(r["body"]["model"] == "canned" for r in server.requests)
        # The candidate that read the environment saw no secret, and none was written.
        assert not any(SECRET in (c["evaluation"]["detail"] or "") for c in out["candidates"])
        for path in Path(out["run_dir"]).rglob("*"):
            if path.is_file():
                assert SECRET not in path.read_text(errors="replace"), path

        # A second run replays every response from the cache: no new request.
        again = run_stop(
            *args,
            cwd=tmp_path,
            env={"OPENAI_API_KEY": SECRET},
        )
        assert again.returncode == 0, again.stderr
        assert len(server.requests) == 6
        assert json.loads(again.stdout)["usage"]["cached"] == 6


def test_failed_improver_exits_1_after_saving_the_run(tmp_path, script):
    improver = tmp_path / "crashes.py"
    improver.write_text(
        "def improve_algorithm(initial_solution, utility, language_model):\n    1 / 0\n"
    )
    proc = run_stop(
        "improve",
        "--target",
        str(FIB),
        "--script",
        str(script([replies.MEMO])),
        "--improver",
        str(improver),
        "--json",
        "--runs-dir",
        str(tmp_path / "runs"),
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    assert out["status"] == "improver_failed"
    assert "ZeroDivisionError" in out["improver"]["error"]
    assert Path(out["best_path"]).read_text() == FIB.read_text()


def test_rich_output_shows_table_diff_and_run_dir(tmp_path, script):
    proc = run_stop(
        "improve",
        "--target",
        str(FIB),
        "--script",
        str(script([replies.MEMO, replies.SYNTAX])),
        "--runs-dir",
        str(tmp_path / "runs"),
        cwd=tmp_path,
        env={"COLUMNS": "120"},
    )
    assert proc.returncode == 0, proc.stderr
    for text in ("Candidates", "syntax_error", "+@lru_cache", "Improved", "Run saved in"):
        assert text in proc.stdout, text


# A noisy utility that happens to favour shorter programs: it stands for a timing in which
# a copy of the original ran faster by chance (as one did in the embedded model's
# measurement: a copy without its docstring, "1.27x faster").
NOISY = """
from stop.scoring.utility import Evaluation, Utility


class Shorter(Utility):
    name = "shorter"
    description = "shorter is better"
    noisy = True

    def evaluate(self, program):
        return Evaluation(status="ok", score=1000.0 / len(program), seconds=0.0)


def build(target, options):
    return Shorter()
"""


def test_a_noisy_utility_never_crowns_a_copy_of_the_original(tmp_path, script):
    utility = tmp_path / "shorter.py"
    utility.write_text(NOISY)
    source = FIB.read_text()
    # The docstring gone and the layout changed, the code the same: shorter, so "better".
    copy = "\n".join(line for line in source.splitlines() if not line.startswith('"""'))
    copy = copy.replace("fib(n - 1) + fib(n - 2)", "fib(n-1)+fib(n-2)")
    assert len(copy) < len(source) and "def fib" in copy

    def run(reply: str):
        config = _config(
            tmp_path, script([f"```python\n{reply}\n```"]), utility=str(utility), use_cache=False
        )
        return improve_run(config)

    result = run(copy)
    assert not result.improved and result.best_score == result.baseline_score
    # A change to the code itself is still crowned when it scores better.
    assert run(copy.replace("fib(n-1)+fib(n-2)", "n")).improved
