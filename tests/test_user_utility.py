"""Your own utility, without reading the source: the README's example runs as printed,
fixed instances, declared score ranges, reasons, seeds, a scorer's exceptions, and what
user code prints."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from stop.defaults import LOCAL
from stop.records import ImproveConfig
from tests.helpers import ROOT, improve_run, run_stop

KNAPSACK = ROOT / "examples" / "knapsack_utility.py"
EXACT = (
    "def pack(weights, values, capacity):\n"
    "    from itertools import combinations\n"
    "    items = range(len(weights))\n"
    "    subsets = [s for r in range(len(weights) + 1) for s in combinations(items, r)]\n"
    "    fits = [s for s in subsets if sum(weights[i] for i in s) <= capacity]\n"
    "    return list(max(fits, key=lambda s: sum(values[i] for i in s)))\n"
)


def _fenced(program: str) -> str:
    return f"```python\n{program}```\n"


def _readme_block(after: str, language: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(after) :]
    return re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)


def test_the_readme_utility_is_the_example_file_and_at_most_15_lines():
    block = _readme_block("### Writing a utility", "python")
    assert block == KNAPSACK.read_text()
    assert len(block.strip().splitlines()) <= 15


def test_the_readme_utility_command_runs_as_printed(tmp_path: Path, script):
    command = _readme_block("### Writing a utility", "bash").strip()
    assert command.startswith("stop improve ")
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    replies = script(
        [_fenced(EXACT), _fenced("def pack(weights, values, capacity):\n    return [99]\n")]
    )
    args = [*command.split()[1:], "--script", str(replies), "--samples", "2", "--json"]
    done = run_stop(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["improved"] and result["best_score"] == 1.0
    assert 0 < result["baseline_score"] < 1
    (raised,) = [c for c in result["candidates"] if c["evaluation"]["score"] == 0]
    assert "[99]" in (tmp_path / result["run_dir"] / raised["path"]).read_text()
    assert "IndexError" in raised["evaluation"]["detail"]


def _program(result, candidate) -> str:
    return Path(result.run_dir, candidate.path).read_text()


def _task_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "task.py"
    path.write_text("from stop.scoring.task import Instance, TaskSpec\n\n" + body)
    return path


def _improve(tmp_path: Path, utility: Path, target: str, replies, model_factory, improver="seed"):
    (tmp_path / "target.py").write_text(target)
    model = model_factory([_fenced(r) for r in replies])
    config = ImproveConfig(
        target=tmp_path / "target.py",
        utility=str(utility),
        improver=improver,
        runs_dir=tmp_path / "runs",
        budget=LOCAL.improve.model_copy(update={"max_responses_per_call": len(replies) or 1}),
    )
    return improve_run(config, backend=model), model


SCORED = """
def score(instance, output):
    assert output >= 0, "negative output"
    if output > 10:
        return 11.0
    return float(output), f"got {output}"

SPEC = TaskSpec(
    name="tens", entry="f", score=score, score_range=(0.0, 10.0),
    description="f() returns a number; score: the number itself, up to 10.",
    instances=[Instance([])],
)
build = SPEC.build
"""


def test_scores_keep_their_declared_range_and_their_reasons(tmp_path: Path, scripted_model):
    utility = _task_file(tmp_path, SCORED)
    replies = ["def f():\n    return 7\n", "def f():\n    return -1\n", "def f():\n    return 50\n"]
    result, model = _improve(tmp_path, utility, "def f():\n    return 3\n", replies, scripted_model)
    by_answer = {
        _program(result, c).strip().split()[-1]: c.evaluation for c in result.candidates if c.path
    }
    assert by_answer["7"].score == 7.0 and by_answer["3"].score == 3.0  # not clipped to 1
    assert (
        by_answer["-1"].score == 0.0 and "AssertionError: negative output" in by_answer["-1"].detail
    )
    assert by_answer["50"].score == 0.0 and "outside its range [0, 10]" in by_answer["50"].detail
    assert any("got 7" in (f.message or "") for f in by_answer["7"].feedback)
    assert result.status == "completed" and result.best_score == 7.0
    assert Path(result.run_dir, "result.json").exists()


def test_a_reason_reaches_the_model_through_feedback(tmp_path: Path, scripted_model):
    utility = _task_file(tmp_path, SCORED)
    result, model = _improve(
        tmp_path,
        utility,
        "def f():\n    return 3\n",
        ["def f():\n    return 4\n"] * 4,
        scripted_model,
        "refine",
    )
    assert any("got 3" in p.message or "got 4" in p.message for p in model.prompts), [
        p.message for p in model.prompts
    ]


def test_a_scorer_that_fails_on_the_original_is_bad_input(tmp_path: Path):
    utility = _task_file(
        tmp_path, SCORED.replace('assert output >= 0, "negative output"', "return 'high'")
    )
    (tmp_path / "target.py").write_text("def f():\n    return 3\n")
    done = run_stop("improve", "--target", "target.py", "--utility", str(utility), cwd=tmp_path)
    assert done.returncode == 2 and "not a score" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


SEEDED = """
def score(instance, output):
    return 1.0

SPEC = TaskSpec(
    name="seeded", entry="draw", score=score, description="draw() returns anything.",
    instances=[Instance([], seed=s) for s in (0, 0, 1, 2)],
)
build = SPEC.build
"""


def test_instances_are_seeded_by_their_own_seed(tmp_path: Path):
    from stop.records import UtilityOptions
    from stop.scoring.utility import Target, load_utility

    utility = load_utility(
        str(_task_file(tmp_path, SEEDED)),
        Target(path=tmp_path / "t.py", source=""),
        UtilityOptions(),
    )
    program = "import random\nimport numpy as np\ndef draw():\n"
    program += "    return [random.random(), float(np.random.rand())]\n"
    payload = {
        "code": program,
        "entry": "draw",
        "inputs": [[]] * 4,
        "seeds": [0, 0, 1, 2],
        "per_call_s": 2.0,
    }
    from stop.sandbox.runner import Limits

    results = utility.run_job("solve", payload, Limits(), preload=("numpy", "numpy.random")).value[
        "results"
    ]
    outputs = [tuple(r["output"]) for r in results]
    assert outputs[0] == outputs[1] and len(set(outputs)) == 3


PRINTS = """
print("building the utility")

def score(instance, output):
    print("scoring", output)
    return 1.0

SPEC = TaskSpec(
    name="loud", entry="f", score=score, description="f() returns 1.", instances=[Instance([])]
)
build = SPEC.build
"""


def test_what_user_code_prints_goes_to_the_run_log(tmp_path: Path, script):
    utility = _task_file(tmp_path, PRINTS)
    (tmp_path / "target.py").write_text("def f():\n    return 1\n")
    replies = script([_fenced("def f():\n    return 2 - 1\n")])
    done = run_stop(
        "improve",
        "--target",
        "target.py",
        "--utility",
        str(utility),
        "--script",
        str(replies),
        "--samples",
        "1",
        "--json",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # stdout is the one JSON object
    events = [
        json.loads(line)
        for line in Path(tmp_path, result["run_dir"], "events.jsonl").read_text().splitlines()
    ]
    printed = [e["text"] for e in events if e["event"] == "printed"]
    assert "building the utility" in printed and "scoring 1" in printed


def test_a_utility_that_runs_code_itself_is_flagged(tmp_path: Path, caplog):
    from stop.records import UtilityOptions
    from stop.scoring.utility import Target, load_utility

    path = tmp_path / "runner.py"
    path.write_text(
        "from stop.scoring.task import Instance, TaskSpec\n"
        "def score(instance, output):\n    return 1.0\n"
        "def build(target, options):\n"
        "    namespace = {}\n"
        "    exec(target.source, namespace)  # runs the candidate here: unsafe\n"
        "    spec = TaskSpec(name='x', entry='f', score=score, description='d',\n"
        "                    instances=[Instance([])])\n"
        "    return spec.build(target, options)\n"
    )
    with caplog.at_level("WARNING"):
        load_utility(
            str(path),
            Target(path=tmp_path / "t.py", source="def f():\n    return 1\n"),
            UtilityOptions(),
        )
    assert any(
        "runs code itself" in r.getMessage() and "line 6" in r.getMessage() for r in caplog.records
    )


def test_a_utility_evaluate_that_raises_scores_zero(tmp_path: Path, scripted_model):
    path = tmp_path / "broken.py"
    path.write_text(
        "from stop.scoring.utility import Evaluation, Utility\n"
        "class Broken(Utility):\n"
        "    name, description = 'broken', 'raises on long programs'\n"
        "    def evaluate(self, program):\n"
        "        assert len(program) < 40, 'too long'\n"
        "        return Evaluation(status='ok', score=0.5, seconds=0.0)\n"
        "def build(target, options):\n    return Broken()\n"
    )
    result, _ = _improve(
        tmp_path,
        path,
        "def f():\n    return 1\n",
        ["def f():\n    return 1 + 0 + 0 + 0 + 0 + 0\n"],
        scripted_model,
    )
    long = next(c for c in result.candidates if c.path and "+ 0" in _program(result, c))
    assert long.evaluation.score == 0.0 and "AssertionError: too long" in long.evaluation.detail
    assert result.status == "completed"
