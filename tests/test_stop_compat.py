"""Improvers written against microsoft/stop's API run unchanged: `from helpers import
extract_code`, `prompt(..., n_responses=k)` returning a list, a utility that scores 0
past its budget, a model that raises past its own; and `--preset stop-paper`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stop.defaults import LOCAL, PRESETS, estimate, preset
from stop.errors import BadInput
from stop.records import Budget, ImproveConfig, ModelSettings, SelfImproveConfig
from tests import improvers as I
from tests import replies
from tests.helpers import FIB, improve_run, run_stop, self_improve_run

# The shape of STOP's seed improver: one batch of min(samples, budget) rewrites, the best
# by the utility. Its extract_code may hand back None for a reply without code; ours
# leaves such replies out, so max() sees programs only.
STOP_SEED = '''from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    """Ask for rewrites in one batch and keep the one the utility likes best."""
    expertise = "You are a careful programmer who makes code faster."
    message = f"""Rewrite this program to score higher:
```python
{initial_solution}
```
It is scored by:
```python
{utility.str}
```"""
    n_messages = min(language_model.max_responses_per_call, utility.budget)
    new_solutions = language_model.batch_prompt(expertise, [message] * n_messages, temperature=0.7)
    new_solutions = extract_code(new_solutions)
    return max(new_solutions, key=utility)
'''

# prompt() as STOP has it: a list of n_responses strings. The improver checks what it
# is handed and crashes (failing the run) if any of it is not STOP's behaviour.
STOP_PROMPT = """from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    assert utility(None) == 0 and utility("") == 0 and utility.uses == 0, utility.uses
    expertise = "You write fast code."
    answers = language_model.prompt(expertise, "Speed up:\\n" + initial_solution, n_responses=2)
    assert isinstance(answers, list) and len(answers) == 2, answers
    try:
        language_model.prompt("x", "y", n_responses=language_model.max_responses_per_call + 1)
    except Exception as exc:
        assert "responses in one call" in str(exc), exc
    else:
        raise AssertionError("more than max_responses_per_call was granted")
    best = extract_code(language_model.prompt(expertise, initial_solution, n_responses=2)[0])
    return max([initial_solution, best], key=utility)
"""

# Spends past the utility budget, as STOP's "improved" seed does: three batches, every
# new candidate scored once through a cache. The first batch holds the good rewrite;
# the later ones are scored after the budget is spent, and must get 0, not an error.
OVERSPENDER = """from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    cache = {}

    def score(solution):
        if solution not in cache:
            cache[solution] = utility(solution)
        return cache[solution]

    seen = []
    for temperature in (0.4, 0.7, 1.0):
        message = "faster:\\n" + initial_solution
        batch = language_model.batch_prompt("expert", [message] * 2, temperature)
        for solution in extract_code(batch):
            if solution not in seen:
                seen.append(solution)
                score(solution)
    assert utility.uses == utility.budget, (utility.uses, utility.budget)
    late = utility("def fib(n):\\n    return 0\\n")
    assert late == 0 and type(late) is float, late
    report = utility.evaluate("def fib(n):\\n    return 1\\n")
    assert report["score"] == 0 and report["status"] == "budget_spent", report
    return max(seen, key=score)
"""

# Asks the model until it refuses, scoring what comes back, and never catches the
# refusal: STOP's model raises, so this improver crashes with its candidates scored.
TILL_REFUSED = """from helpers import extract_code


def improve_algorithm(initial_solution, utility, language_model):
    best, best_score = initial_solution, utility(initial_solution)
    while True:
        batch = language_model.batch_prompt("expert", ["faster:\\n" + initial_solution] * 2, 0.7)
        for solution in extract_code(batch):
            if utility(solution) > best_score:
                best, best_score = solution, utility(solution)
"""

# STOP counts model calls, and improvers plan by it: under a request cap, `budget` is
# the calls left, so this loop makes exactly that many calls of full batches.
PLANS_BY_CALLS = """def improve_algorithm(initial_solution, utility, language_model):
    calls = language_model.budget
    for _ in range(calls):
        language_model.batch_prompt("expert", ["x"] * language_model.max_responses_per_call, 0.7)
    assert language_model.budget == 0, language_model.budget
    return initial_solution
"""


def _config(tmp_path: Path, improver: str, **budget) -> ImproveConfig:
    path = tmp_path / "stop_improver.py"
    path.write_text(improver)
    return ImproveConfig(
        target=FIB,
        improver=str(path),
        model=ModelSettings(backend="scripted", script=tmp_path / "unused.json"),
        runs_dir=tmp_path / "runs",
        budget=LOCAL.improve.model_copy(update=budget),
    )


def test_a_stop_seed_shaped_improver_runs_unchanged(tmp_path, scripted_model):
    model = scripted_model([replies.PROSE, replies.MEMO, replies.WRONG, replies.PROSE])
    result = improve_run(_config(tmp_path, STOP_SEED), backend=model)
    assert result.status == "completed", result.improver.error
    assert result.improved and "lru_cache" in Path(result.best_path).read_text()
    # min(max_responses_per_call, utility.budget) samples, in one call.
    assert len(model.prompts) == min(LOCAL.improve.max_responses_per_call, 5)


def test_prompt_returns_n_responses_and_a_falsy_program_scores_0_for_free(tmp_path, scripted_model):
    model = scripted_model([replies.MEMO, replies.PROSE])
    result = improve_run(_config(tmp_path, STOP_PROMPT), backend=model)
    assert result.status == "completed", result.improver.error
    assert len(model.prompts) == 4  # two prompts of n_responses=2; the refused one cost none
    assert result.improved  # prompt(...)[0] was the memoized rewrite
    assert result.utility_uses == 2  # utility(None) and utility("") used nothing


def test_overspending_the_utility_scores_0_and_keeps_the_good_candidate(tmp_path, scripted_model):
    model = scripted_model([replies.MEMO, replies.WRONG, replies.SYNTAX, replies.PROSE])
    result = improve_run(_config(tmp_path, OVERSPENDER, evaluations=2), backend=model)
    assert result.status == "completed", result.improver.error
    assert result.improved and "lru_cache" in Path(result.best_path).read_text()
    assert result.utility_uses == 2
    # Only what was evaluated is a candidate: the calls past the budget ran nothing.
    assert sum(c.path is not None for c in result.candidates) == 2
    spent = [f for f in result.improver.findings if "past its budget" in f]
    assert spent == ["asked the utility past its budget of 2 evaluations (scored 0)"]


def test_a_refused_model_call_crashes_the_improver_but_not_the_run(tmp_path, scripted_model):
    model = scripted_model([replies.WRONG, replies.MEMO, replies.PROSE])
    result = improve_run(
        _config(tmp_path, TILL_REFUSED, model_calls=4, max_responses_per_call=2), backend=model
    )
    assert result.status == "improver_failed" and result.improver.status == "crash"
    assert "BudgetExhausted" in (result.improver.error or "")
    # The memoized rewrite it had scored before the model refused is still the run's.
    assert result.improved and "lru_cache" in Path(result.best_path).read_text()
    assert result.best_score > result.baseline_score
    assert any("asked the language model past its budget" in f for f in result.improver.findings)


def test_a_crashed_improver_without_a_better_candidate_keeps_the_original(tmp_path, scripted_model):
    model = scripted_model([replies.WRONG, replies.PROSE])
    result = improve_run(
        _config(tmp_path, TILL_REFUSED, model_calls=4, max_responses_per_call=2), backend=model
    )
    assert result.status == "improver_failed" and not result.improved
    assert Path(result.best_path).read_text() == FIB.read_text()


def test_under_a_request_cap_budget_counts_calls_as_stop_does(tmp_path, scripted_model):
    model = scripted_model([replies.PROSE])
    config = _config(
        tmp_path, PLANS_BY_CALLS, model_calls=24, model_requests=4, max_responses_per_call=6
    )
    result = improve_run(config, backend=model)
    assert result.status == "completed", result.improver.error
    assert len(model.prompts) == 24 and result.usage.calls == 24


def test_the_stop_paper_preset_is_stops_config():
    chosen = preset("stop-paper")
    profile = chosen.apply(LOCAL)
    for budget in (profile.improve, profile.round, profile.test):
        assert budget.max_responses_per_call == 6 and budget.model_requests == 4
        assert budget.model_calls == 24 and budget.evaluations == 25
        assert budget.max_tokens == LOCAL.improve.max_tokens  # not STOP's to set here
    assert profile.tests == 5 and chosen.rounds == 6
    assert profile.round.timeout_s == LOCAL.round.timeout_s
    with pytest.raises(BadInput, match="unknown preset 'stop'.*stop-paper"):
        preset("stop")


def test_preset_on_the_command_line(tmp_path, script):
    replies_file = script([replies.PROSE])
    base = ["improve", "--target", str(FIB), "--script", str(replies_file)]
    bad = run_stop(*base, "--preset", "nope", "--runs-dir", str(tmp_path / "bad"), cwd=tmp_path)
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.strip().count("\n") == 0 and "unknown preset 'nope'" in bad.stderr
    assert not (tmp_path / "bad").exists()

    runs = tmp_path / "runs"
    args = [*base, "--preset", "stop-paper", "--samples", "2", "--runs-dir", str(runs)]
    done = run_stop(*args, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # stdout is exactly one JSON object
    assert "Preset stop-paper: 4 model calls per improver run, 24 completions, 25 utility" in (
        " ".join(done.stderr.split())
    )
    assert "--samples 2 as given" in done.stderr
    config = json.loads((Path(result["run_dir"]) / "config.json").read_text())
    assert config["budget"]["max_responses_per_call"] == 2  # the flag beat the preset
    assert config["budget"]["model_requests"] == 4 and config["budget"]["evaluations"] == 25


def test_self_improve_preset_sets_rounds_and_tests(tmp_path, script):
    # An improver that returns its input: the run is quick, and what the lines about
    # budgets say is the configuration the preset built, with the flags given on top.
    (tmp_path / "same.py").write_text(
        "def improve_algorithm(initial_solution, utility, language_model):\n"
        "    return initial_solution\n"
    )
    runs = tmp_path / "runs"
    out = run_stop(
        "self-improve", "--preset", "stop-paper", "--tasks", "parity", "--improver", "same.py",
        "--rounds", "1", "--script", str(script(["no code"])), "--runs-dir", str(runs), "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stderr.split())
    assert "6 samples per call" in text and "5 meta-utility tests" in text
    assert "--rounds 1 as given" in text
    profile = PRESETS["stop-paper"].apply(LOCAL)
    expected = estimate(
        SelfImproveConfig(rounds=1, tests=5, round_budget=profile.round, test_budget=profile.test)
    )
    assert f"at most {expected.calls} model calls" in text
    result = json.loads(out.stdout)
    assert len(result["generations"]) == 2
    assert len(result["generations"][0]["meta"]["tests"]) == 5
    resumed = run_stop(
        "self-improve", "--preset", "stop-paper", "--resume", "x", "--runs-dir", str(runs),
        cwd=tmp_path,
    )  # fmt: skip
    assert resumed.returncode == 2 and "without --preset" in resumed.stderr


# The seed's shape as generation 0, cheaply: two tests of two samples each, one round.
GEN0_BUDGET = Budget(model_calls=4, max_responses_per_call=2, max_tokens=256, evaluations=5)


def test_a_stop_shaped_improver_is_generation_0_of_self_improve(tmp_path):
    improver = tmp_path / "stop_seed.py"
    improver.write_text(STOP_SEED)
    script = tmp_path / "script.json"
    # Every lpn prompt gets the solving reply: a STOP improver that runs scores 1.0 on
    # each test, one that fails to import or crashes scores 0.
    script.write_text(I.script([I.LAZY], [I.GOOD_LPN]))
    config = SelfImproveConfig(
        rounds=1,
        tests=2,
        improver=str(improver),
        model=ModelSettings(backend="scripted", script=script),
        round_budget=LOCAL.round,
        test_budget=GEN0_BUDGET,
        runs_dir=tmp_path / "runs",
    )
    store, generations = self_improve_run(config)
    seed, proposal = generations
    assert [t.improver_status for t in seed.meta.tests] == ["ok", "ok"], seed.meta.tests
    assert seed.meta_utility_val == 1.0
    assert (store.dir / seed.path).read_text() == STOP_SEED
    # Generation 0 then improved itself: its round asked the model and scored a proposal.
    assert proposal.parent == 0 and proposal.improver_status == "ok", proposal.improver_error
    assert any(c.origin == "model" for c in proposal.candidates)


def test_a_meta_utility_test_whose_improver_overspends_still_scores(tmp_path, scripted_model):
    from stop.scoring.meta import MetaUtility
    from stop.scoring.task import load_task
    from stop.wiring import Run

    # One evaluation per test: the overspender asks for more, which must score 0 and let
    # it return the solving program it scored first (else the test scores 0).
    budget = GEN0_BUDGET.model_copy(update={"model_calls": 6, "evaluations": 1})
    with Run(tmp_path / "runs", backend=scripted_model([I.GOOD_LPN])) as run:
        meta = MetaUtility([load_task("lpn")], run, tests=1, budget=budget, evaluations=1)
        score = meta.score(OVERSPENDER)
    (test,) = score.tests
    assert test.improver_status == "ok", test.error
    assert test.val == 1.0
    assert any("utility past its budget of 1" in f for f in test.findings)
