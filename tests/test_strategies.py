"""Strategies from the seed systems, with a scripted model: utility feedback, refine,
MAP-Elites, diff edits, the reranker through the host, `stop compare` and
`stop bench-mutators`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stop.host.ranking import CandidateRanker
from stop.scoring.utility import Evaluation, Target, UtilityOptions
from stop.search.edits import Edit, EditError, apply_edit, apply_reply, parse_edits
from tests import replies as R
from tests.helpers import FIB, calibrated, run_stop

PROGRAM = "def f(x):\n    y = x + 1\n    if y > 3:\n        y = 3\n    return y\n"

MEMO_EDIT = """I will memoize it.
<<<<<<< SEARCH
def fib(n):
=======
import functools


@functools.lru_cache(maxsize=None)
def fib(n):
>>>>>>> REPLACE
"""


def _improve(tmp_path: Path, improver: str, script: list, *extra: str) -> dict:
    path = tmp_path / "script.json"
    path.write_text(json.dumps(script))
    result = run_stop(
        "improve",
        "--target",
        str(FIB),
        "--utility",
        "speed",
        "--improver",
        improver,
        "--backend",
        "scripted",
        "--script",
        str(path),
        "--json",
        *extra,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _prompts(tmp_path: Path, run_id: str) -> list[str]:
    log = tmp_path / "runs" / run_id / "llm.jsonl"
    return [json.loads(line)["user"] for line in log.read_text().splitlines()]


# --- utility feedback -------------------------------------------------------------------


def test_speed_utility_reports_failing_inputs_and_exceptions(tmp_path):
    from utilities.speed import build

    target = Target(path=FIB, source=FIB.read_text())
    utility = calibrated(build(target, UtilityOptions()), target)
    wrong = utility.evaluate("def fib(n):\n    return n * 2\n")
    assert wrong.status == "wrong_answer"
    assert [(f.input, f.expected, f.actual) for f in wrong.feedback] == [
        ("[22]", "17711", "44"),
        ("[25]", "75025", "50"),
    ]
    crash = utility.use("def fib(n):\n    return {}[n]\n")
    (failure,) = crash.feedback
    assert failure.kind == "exception" and "KeyError" in failure.message


def test_task_feedback_never_shows_the_hidden_answer():
    from stop.scoring.task import TaskUtility, load_task

    spec = load_task("parity")
    utility = TaskUtility(spec, 2)
    zeros = "def algorithm(train_samples, train_parity, test_samples):\n    return [0] * len(test_samples)\n"  # noqa: E501
    evaluation = utility.use(zeros)
    assert 1 <= len(evaluation.feedback) <= 3
    for failure in evaluation.feedback:
        assert failure.kind == "wrong_answer" and failure.expected is None
        assert failure.actual.startswith("[0") and "scored" in failure.message
    raising = utility.use("def algorithm(a, b, c):\n    raise ValueError('boom')\n")
    assert raising.feedback[0].kind == "exception" and "boom" in raising.feedback[0].message


def test_lmc_feedback_uses_the_visible_training_pairs():
    from utilities.lmc import build

    utility = build(Target(path=Path("x.lmc"), source="HLT\n"), UtilityOptions(), "add-2")
    evaluation = utility.evaluate("HLT\n")  # returns its first input: wrong for add-2
    assert evaluation.status == "ok" and evaluation.score < 1
    train = {json.dumps(list(inputs)): str(output) for inputs, output in utility.task.train}
    for failure in evaluation.feedback:
        assert train[failure.input] == failure.expected  # a training pair, not a test pair


def test_improvers_get_feedback_through_the_proxy(tmp_path):
    improver = tmp_path / "asks.py"
    improver.write_text(
        "import json\n\n"
        "def improve_algorithm(initial_solution, utility, language_model):\n"
        "    result = utility.evaluate('def fib(n):\\n    return n * 2\\n')\n"
        "    return initial_solution + '\\n# ' + json.dumps(result) + '\\n'\n"
    )
    result = _improve(tmp_path, str(improver), [R.MEMO])
    run = tmp_path / "runs" / result["run_id"] / "result.json"
    program = json.loads(run.read_text())["improver"]["program"]
    reported = json.loads(program.rsplit("# ", 1)[1])
    assert reported["status"] == "wrong_answer" and reported["score"] == 0
    assert reported["feedback"][0] | {} == {
        "kind": "wrong_answer",
        "input": "[22]",
        "expected": "17711",
        "actual": "44",
        "message": None,
    }
    assert result["utility_uses"] == 1  # feedback costs one use, like a score


# --- refine ---------------------------------------------------------------------------


def test_refine_puts_the_failures_it_got_in_front_of_the_model(tmp_path):
    # The model answers wrongly until it is shown that wrong answer's failure.
    script = [
        {"when": "expected 17711; got 44", "replies": [R.MEMO]},
        {"when": "Improve the following", "replies": [R.WRONG]},
    ]
    result = _improve(tmp_path, "refine", script)
    assert result["improved"] and result["speedup"] > 5
    prompts = _prompts(tmp_path, result["run_id"])
    assert "expected 17711; got 44" not in prompts[0]
    assert any("wrong answer; input [22]; expected 17711; got 44" in p for p in prompts)
    statuses = [c["evaluation"]["status"] for c in result["candidates"]]
    assert statuses.index("wrong_answer") < len(statuses) - 1  # feedback came, then the fix


def test_refine_stops_on_a_plateau(tmp_path):
    result = _improve(tmp_path, "refine", [R.WRONG], "--llm-budget", "40")
    # Two rounds without gain end it, far before either budget is spent.
    assert result["usage"]["calls"] < 40 and result["utility_uses"] < 5
    assert not result["improved"]


# --- MAP-Elites --------------------------------------------------------------------------

ITERATIVE = """```python
def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a
```"""

PADDED = (
    "```python\n"
    + "".join(f"# note {i}: the same naive recursion, explained at length\n" for i in range(12))
    + FIB.read_text().split('"""', 2)[-1].strip()
    + "\n```"
)


def test_map_elites_fills_distinct_cells_and_saves_its_archive(tmp_path):
    script = [{"when": "Write a variation", "replies": [ITERATIVE, PADDED, R.WRONG, MEMO_EDIT]}]
    result = _improve(tmp_path, "map_elites", script, "--samples", "4")
    assert result["improved"]
    record = json.loads(
        (tmp_path / "runs" / result["run_id"] / "records" / "archive.json").read_text()
    )
    assert record["run_id"] == result["run_id"]
    cells = [tuple(c["cell"]) for c in record["data"]["cells"]]
    assert len(cells) == len(set(cells)) >= 3  # the original, the fast ones, the padded one
    best = max(record["data"]["cells"], key=lambda c: c["score"])
    assert best["program"].strip() == (tmp_path / result["best_path"]).read_text().strip()
    shown = run_stop("lineage", result["run_id"], cwd=tmp_path, env={"COLUMNS": "160"})
    assert "MAP-Elites archive" in shown.stdout and f"{len(cells)} cells filled" in shown.stdout


# --- diff edits ------------------------------------------------------------------------


def test_search_replace_blocks_apply_exactly_and_tolerantly():
    exact = Edit(search="    if y > 3:\n        y = 3\n", replace="    y = min(y, 3)\n")
    assert (
        apply_edit(PROGRAM, exact) == "def f(x):\n    y = x + 1\n    y = min(y, 3)\n    return y\n"
    )
    trailing = Edit(search="    y = x + 1   \n", replace="    y = x + 2\n")
    assert "y = x + 2" in apply_edit(PROGRAM, trailing)
    # Indented differently from the program: matched, and the replacement re-indented.
    shifted = Edit(search="if y > 3:\n    y = 3\n", replace="if y > 4:\n    y = 4\n")
    assert "    if y > 4:\n        y = 4\n" in apply_edit(PROGRAM, shifted)


def test_edits_that_do_not_apply_fail_clearly():
    with pytest.raises(EditError, match="not in the program: 'z = 1'"):
        apply_edit(PROGRAM, Edit(search="z = 1\n", replace="z = 2\n"))
    with pytest.raises(EditError, match="matches 2 places"):
        apply_edit("a = 1\nb = 2\na = 1\n", Edit(search="a = 1\n", replace="a = 3\n"))
    with pytest.raises(EditError, match="empty SEARCH"):
        apply_edit(PROGRAM, Edit(search="\n", replace="x\n"))


def test_unified_diffs_apply():
    diff = """```diff
--- a/f.py
+++ b/f.py
@@ -1,5 +1,4 @@
 def f(x):
     y = x + 1
-    if y > 3:
-        y = 3
+    y = min(y, 3)
     return y
```"""
    outcome = apply_reply(PROGRAM, diff)
    assert outcome.mode == "edits" and outcome.edits == 1
    assert outcome.program == "def f(x):\n    y = x + 1\n    y = min(y, 3)\n    return y\n"


def test_a_reply_falls_back_to_its_full_program_or_reports_nothing_usable():
    bad_edit = "<<<<<<< SEARCH\nnothing like it\n=======\nx = 1\n>>>>>>> REPLACE\n"
    fallback = apply_reply(
        PROGRAM, bad_edit + "\nOr the whole thing:\n```python\ndef f(x):\n    return 3\n```"
    )  # noqa: E501
    assert fallback.mode == "rewrite" and fallback.program == "def f(x):\n    return 3"
    assert "not in the program" in fallback.error
    nothing = apply_reply(PROGRAM, bad_edit)
    assert nothing.mode == "none" and nothing.program is None
    plain = apply_reply(PROGRAM, "```python\nprint(1)\n```")
    assert plain.mode == "rewrite" and plain.edits == 0


@given(
    st.lists(st.text(alphabet="abc =+1\t", min_size=1, max_size=12), min_size=1, max_size=8),
    st.data(),
)
def test_an_identity_edit_of_any_unique_lines_changes_nothing(lines, data):
    program = "\n".join(f"{i}: {line}" for i, line in enumerate(lines)) + "\n"
    start = data.draw(st.integers(0, len(lines) - 1))
    stop = data.draw(st.integers(start + 1, len(lines)))
    chunk = "".join(line + "\n" for line in program.split("\n")[start:stop])
    assert apply_edit(program, Edit(search=chunk, replace=chunk)) == program
    assert parse_edits(f"<<<<<<< SEARCH\n{chunk}=======\n{chunk}>>>>>>> REPLACE\n") == [
        Edit(search=chunk, replace=chunk)
    ]


def test_edit_replies_are_applied_by_the_host_and_counted(tmp_path):
    # map_elites asks for edits: an applying edit, a failing one with a full program to
    # fall back on, a failing one with nothing else, and a plain rewrite.
    failing = "<<<<<<< SEARCH\ndef fob(n):\n=======\ndef fib(n):\n>>>>>>> REPLACE\n"
    script = [
        {"when": "Write a variation", "replies": [MEMO_EDIT, failing + ITERATIVE, failing, R.WRONG]}
    ]
    result = _improve(tmp_path, "map_elites", script, "--samples", "4", "--llm-budget", "4")
    usage = result["usage"]
    assert (
        usage["edits_applied"],
        usage["edits_fell_back"],
        usage["edits_failed"],
        usage["edits_rewrites"],
    ) == (1, 1, 1, 1)
    no_code = [c for c in result["candidates"] if c["evaluation"]["status"] == "no_code"]
    assert len(no_code) == 1 and "not in the program" in no_code[0]["evaluation"]["detail"]


# --- reranker ----------------------------------------------------------------------------


def _evaluation(score: float, status: str = "ok") -> Evaluation:
    return Evaluation(status=status, score=score, seconds=0.0)


def test_the_host_ranker_learns_from_scored_candidates_and_counts_savings():
    ranker = CandidateRanker()
    assert ranker.rank(["a", "b"]) == [0, 1]  # no data yet: the order given
    assert ranker.stats.unfitted == 1
    good = [f"def fib(n):\n    return fast_fib({i})\n" for i in range(4)]
    bad = [f"def fib(n):\n    return n * {i}\n" for i in range(4)]
    for program in good:
        ranker.add(program, _evaluation(1.0))
    for program in bad:
        ranker.add(program, _evaluation(0.0, "wrong_answer"))
    held_out = ["def fib(n):\n    return n * 9\n", "def fib(n):\n    return fast_fib(9)\n"]
    assert ranker.rank(held_out) == [1, 0]
    # Ranked and never evaluated: "a", "b" and both held-out programs.
    assert ranker.stats.fits == 1 and ranker.stats.saved == 4
    ranker.add(held_out[1], _evaluation(1.0))
    assert ranker.stats.saved == 3


def test_rank_reaches_improvers_through_the_proxy(tmp_path):
    improver = tmp_path / "ranks.py"
    improver.write_text(
        """def improve_algorithm(initial_solution, utility, language_model):
    bad = [f"def fib(n):\\n    return n * {i}\\n" for i in range(4)]
    for program in [initial_solution, *bad]:
        utility(program)
    order = utility.rank(["def fib(n):\\n    return n * 7\\n", initial_solution])
    return initial_solution + f"\\n# {order}\\n"
"""
    )
    result = _improve(tmp_path, str(improver), [R.MEMO], "--budget", "5")
    record = json.loads((tmp_path / "runs" / result["run_id"] / "result.json").read_text())
    assert record["improver"]["program"].rstrip().endswith("# [1, 0]")
    assert record["rerank"]["fits"] == 1 and record["rerank"]["saved"] == 1  # n * 7


# --- compare and bench-mutators ---------------------------------------------------------


def test_compare_runs_every_improver_under_the_same_budget(tmp_path):
    from tests import improvers as I

    path = tmp_path / "script.json"
    solutions = [I.ZEROS_LPN, I.GOOD_LPN]
    path.write_text(json.dumps([{"when": "Learning parity", "replies": solutions}]))
    result = run_stop(
        "compare",
        "--improvers",
        "seed,refine",
        "--tasks",
        "parity",
        "--trials",
        "2",
        "--backend",
        "scripted",
        "--script",
        str(path),
        "--json",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["task"], r["improver"]) for r in rows] == [("parity", "seed"), ("parity", "refine")]
    for row in rows:
        assert row["score"]["n"] == 2 and row["calls"] > 0 and row["failed"] == 0
        assert row["score"]["low"] <= row["score"]["mean"] <= row["score"]["high"]
    bad = run_stop(
        "compare",
        "--improvers",
        "seed,nope",
        "--tasks",
        "parity",
        "--backend",
        "scripted",
        "--script",
        str(path),
        cwd=tmp_path,
    )
    assert bad.returncode == 2 and "unknown improver 'nope'" in bad.stderr


def test_bench_mutators_rates_valid_correct_and_improving_mutations(tmp_path):
    script = [
        {"when": "Answer with edits", "replies": [MEMO_EDIT, R.SYNTAX]},
        {"when": "complete program", "replies": [R.MEMO, R.WRONG]},
    ]
    path = tmp_path / "script.json"
    path.write_text(json.dumps(script))
    result = run_stop(
        "bench-mutators",
        "--backend",
        "scripted",
        "--script",
        str(path),
        "--samples",
        "2",
        "--targets",
        "fib",
        "--json",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = {(r["mode"], r["target"]): r for r in json.loads(result.stdout)}
    rewrite, edit = rows[("rewrite", "fib")], rows[("edit", "fib")]
    assert (rewrite["valid"], rewrite["correct"], rewrite["improving"]) == (2, 1, 1)
    assert (edit["valid"], edit["correct"], edit["improving"]) == (1, 1, 1)
    assert edit["edits_applied"] == 1 and edit["tokens_per_improvement"] == edit["tokens"]
    assert rewrite["rates"] == {"valid": 1.0, "correct": 0.5, "improving": 0.5}
    assert rows[("edit", "all")]["mutations"] == 2
    bad = run_stop("bench-mutators", "--targets", "nope", cwd=tmp_path)
    assert bad.returncode == 2 and "unknown target 'nope'" in bad.stderr


def test_speed_candidates_may_use_numpy(tmp_path):
    from utilities.speed import build

    target = Target(path=FIB, source=FIB.read_text())
    utility = calibrated(build(target, UtilityOptions()), target)
    vectorized = (
        "import numpy as np\n\n\n"
        "def fib(n):\n"
        "    m = np.linalg.matrix_power(np.array([[1, 1], [1, 0]], dtype=object), n)\n"
        "    return int(m[0, 1])\n"
    )
    evaluation = utility.evaluate(vectorized)
    assert evaluation.status == "ok", evaluation.detail
