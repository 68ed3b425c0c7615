"""No evaluation paid twice: when two programs are the same, what decides a utility's
evaluation (its fingerprint), which utilities may reuse one, and the cache on disk that
a resumed or replayed run reads them from."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import textwrap
import threading
from pathlib import Path

import pytest

from stop.records import Budget, Evaluation, Status, UtilityOptions
from stop.scoring.blocks import Blocks
from stop.scoring.evalcache import EvaluationCache, storable
from stop.scoring.sameness import normalized, program_key, same_code
from stop.scoring.task import Instance, TaskUtility
from stop.scoring.utility import Target, load_utility
from tests.helpers import ROOT
from utilities import lpn

PROGRAM = '''import numpy as np


def algorithm(train_samples, train_parity, test_samples):
    """Guess."""
    predictions = np.random.binomial(1, 0.5, len(test_samples))
    return predictions
'''

# The same program: other comments, blank lines, spacing, indentation width, a call
# split over lines.
SAME = '''# a guesser
import numpy as np

def algorithm( train_samples, train_parity, test_samples ):  # the entry
  """Guess."""

  predictions = np.random.binomial(
      1, 0.5,   len(test_samples)
  )
  return predictions   # as an array
'''


def _target(source: str = PROGRAM, name: str = "solution.py") -> Target:
    return Target(path=Path(name), source=source)


def _utility(spec: str, source: str = PROGRAM, **options):
    return load_utility(spec, _target(source), UtilityOptions(**options))


# --- sameness -------------------------------------------------------------------------


def test_comments_blank_lines_and_spacing_do_not_make_another_program():
    assert normalized(PROGRAM) == normalized(SAME)
    assert program_key(PROGRAM) == program_key(SAME)


@pytest.mark.parametrize(
    "changed",
    [
        PROGRAM.replace("0.5", "0.6"),  # a number
        PROGRAM.replace('"""Guess."""', '"""Guess!"""'),  # a docstring is data (__doc__)
        PROGRAM.replace("    return predictions", "return predictions"),  # the block's end
        PROGRAM.replace("binomial(1,", "binomial(1 ,") + "x = 'a  b'\n",  # a string's space
    ],
)
def test_a_changed_token_or_block_is_another_program(changed: str):
    assert program_key(changed) != program_key(PROGRAM)


def test_space_inside_a_string_or_an_f_string_is_kept():
    assert program_key("s = 'a b'\n") != program_key("s = 'a  b'\n")
    assert program_key('print(f"{x = }")\n') != program_key('print(f"{x=}")\n')
    assert program_key('print(f"{x}")  # c\n') == program_key('print(f"{x}")\n')


def test_programs_that_do_not_tokenize_still_compare():
    broken = "def f(:\n    return [1,\n"
    assert program_key(broken) == program_key(broken + "\n\n")
    assert program_key(broken) != program_key(broken.replace("1", "2"))
    assert normalized(broken)  # the fallback form, not an exception


def test_lmc_programs_compare_by_their_tokens():
    one = "LDL 1\nSTA 0\nHLT\n"
    assert program_key(one, "lmc") == program_key("LDL\n1\n\n  STA 0 HLT", "lmc")
    assert program_key(one, "lmc") != program_key(one.replace("1", "2"), "lmc")
    # The same text is another program in another language.
    assert program_key(one, "lmc") != program_key(one, "python")


def test_the_same_code_sets_docstrings_aside_too():
    """What a timing cannot tell apart: a copy without its docstrings is the same code
    (stop/improve.py never crowns it under a noisy utility), a changed token is not."""
    bare = PROGRAM.replace('    """Guess."""\n', "")
    assert program_key(bare) != program_key(PROGRAM)  # __doc__ differs: not reused
    assert same_code(bare, SAME) and same_code(PROGRAM.replace("Guess", "Other"), PROGRAM)
    assert not same_code(PROGRAM.replace("0.5", "0.6"), PROGRAM)
    # A module's only statement, a docstring: the same code as an empty module.
    assert same_code('"""Nothing."""\n', "")
    assert not same_code("def f(:\n", "def g(:\n")  # no tree: the normalized form


# --- fingerprints and what is cacheable -----------------------------------------------


def test_one_task_built_twice_has_one_fingerprint():
    first, second = _utility("lpn"), _utility("lpn")
    assert first.cacheable and second.cacheable
    assert first.fingerprint() == second.fingerprint()
    # What the host sets on a utility decides no score.
    second.budget, second.uses = 99, 7
    assert first.fingerprint() == second.fingerprint()


@pytest.mark.parametrize(
    "change",
    [
        {"per_call_s": 1.0},  # the limit per instance
        {"description": lpn.DESCRIPTION + " Be quick."},
        {"val_size": 19},  # the instances
        {"name": "lpn2"},
        {"preload": ("numpy",)},
    ],
)
def test_a_changed_setting_of_a_task_changes_its_fingerprint(change: dict):
    changed = TaskUtility(dataclasses.replace(lpn.SPEC, **change))
    assert changed.fingerprint() != TaskUtility(lpn.SPEC).fingerprint()


def test_a_changed_hidden_answer_changes_the_fingerprint():
    # The user's own task, from the examples, with one instance's answer changed.
    knapsack = _utility(str(ROOT / "examples" / "knapsack_utility.py"))
    assert knapsack.cacheable
    spec = knapsack.spec
    first, *rest = spec.instances
    other = dataclasses.replace(spec, instances=[Instance(first.args, first.answer + 1), *rest])
    assert TaskUtility(other).fingerprint() != knapsack.fingerprint()
    assert TaskUtility(spec).fingerprint() == knapsack.fingerprint()


def test_the_evolve_block_rule_is_part_of_the_fingerprint():
    utility = _utility("lpn")
    before = utility.fingerprint()
    marked = PROGRAM.replace("def algorithm", "# EVOLVE-BLOCK-START\ndef algorithm")
    utility.blocks = Blocks.of(marked + "# EVOLVE-BLOCK-END\n", "target")
    assert utility.fingerprint() != before


def test_lmc_tasks_are_cacheable_and_told_apart():
    program = (ROOT / "examples" / "add.lmc").read_text()
    add4, again = _utility("lmc:add-4", program), _utility("lmc:add-4", program)
    assert add4.cacheable and add4.language == "lmc"
    assert add4.fingerprint() == again.fingerprint()
    assert add4.fingerprint() != _utility("lmc:add-3", program).fingerprint()


def test_speed_and_the_meta_utility_are_never_cached(tmp_path: Path, scripted_model):
    from stop.scoring.meta import MetaUtility
    from stop.scoring.task import load_task
    from stop.wiring import Run

    fib = ROOT / "examples" / "fib.py"
    speed = load_utility("speed", Target(path=fib, source=fib.read_text()), UtilityOptions())
    assert speed.noisy and not speed.cacheable
    budget = Budget(model_calls=1, max_responses_per_call=1, max_tokens=10, evaluations=1)
    with Run(tmp_path / "runs", backend=scripted_model(["unused"])) as run:
        meta = MetaUtility([load_task("lpn")], run, tests=1, budget=budget, evaluations=1)
        assert not meta.cacheable


USER_UTILITY = """
from stop.scoring.utility import Evaluation, Utility


class Length(Utility):
    name = "length"
    description = "shorter is better"
    {declared}

    def __init__(self, limit):
        super().__init__()
        self.limit = limit

    def evaluate(self, program):
        return Evaluation(status="ok", score=min(1.0, len(program) / self.limit), seconds=0.0)


def build(target, options):
    return Length(options.timeout_s or 100)
"""


def _user_utility(tmp_path: Path, declared: str, **options):
    path = tmp_path / "length_utility.py"
    path.write_text(USER_UTILITY.format(declared=declared))
    return load_utility(str(path), _target(), UtilityOptions(**options))


def test_a_users_utility_is_cached_only_when_it_says_it_is_deterministic(tmp_path: Path):
    assert not _user_utility(tmp_path, "").cacheable
    declared = _user_utility(tmp_path, "deterministic = True")
    assert declared.cacheable
    # Its options live in its attributes: a changed one is another fingerprint.
    assert declared.fingerprint() == _user_utility(tmp_path, "deterministic = True").fingerprint()
    other = _user_utility(tmp_path, "deterministic = True", timeout_s=50)
    assert other.fingerprint() != declared.fingerprint()
    # So is a changed source file: its scorer may have changed.
    edited = _user_utility(tmp_path, "deterministic = True  # edited")
    assert edited.fingerprint() != declared.fingerprint()


EVALUATOR = '''"""Scores how short the program is."""


def evaluate(program_path):
    with open(program_path) as f:
        return {"combined_score": 1.0 / (1 + len(f.read()))}
'''


def _evaluator(tmp_path: Path, source: str = EVALUATOR, **custom):
    path = tmp_path / "evaluator.py"
    path.write_text(source)
    return load_utility(str(path), _target(), UtilityOptions(custom=custom))


def test_an_evaluator_is_cached_only_when_declared_deterministic(tmp_path: Path):
    assert not _evaluator(tmp_path).cacheable
    declared = _evaluator(tmp_path, deterministic=True)
    assert declared.cacheable
    assert declared.fingerprint() == _evaluator(tmp_path, deterministic=True).fingerprint()
    bigger = _evaluator(tmp_path, deterministic=True, memory_mb=2048)
    assert bigger.fingerprint() != declared.fingerprint()
    edited = _evaluator(tmp_path, EVALUATOR.replace("1 +", "2 +"), deterministic=True)
    assert edited.fingerprint() != declared.fingerprint()
    # A module beside it that it may import counts too.
    (tmp_path / "helper.py").write_text("K = 1\n")
    assert _evaluator(tmp_path, deterministic=True).fingerprint() != declared.fingerprint()


# --- the cache on disk ----------------------------------------------------------------


def _lmc_evaluation() -> tuple[str, str, Evaluation]:
    """A real evaluation (the LMC utility needs no sandbox) and its keys."""
    program = (ROOT / "examples" / "add.lmc").read_text()
    utility = _utility("lmc:add-4", program)
    return utility.fingerprint(), program_key(program, "lmc"), utility.judge(program)


def test_an_evaluation_comes_back_from_another_opening_marked_reused(tmp_path: Path):
    fingerprint, key, evaluation = _lmc_evaluation()
    path = tmp_path / "cache" / "evaluations.sqlite3"
    with EvaluationCache(path) as cache:
        assert cache.get(fingerprint, key) is None
        assert cache.put(fingerprint, key, evaluation)
    with EvaluationCache(path) as replay:
        found = replay.get(fingerprint, key)
        assert found is not None and found.reused == "cache"
        assert found.model_copy(update={"reused": None}) == evaluation
        assert replay.get("another utility", key) is None
        # A copy handed out as reused is not stored again.
        assert not replay.put(fingerprint, key, found)


def test_only_the_programs_own_outcomes_are_stored(tmp_path: Path):
    def made(status: Status, **more) -> Evaluation:
        return Evaluation(status=status, score=0.0, seconds=1.0, **more)

    own: tuple[Status, ...] = (
        "ok",
        "wrong_answer",
        "syntax_error",
        "no_code",
        "rejected",
        "timeout",
    )
    for status in own:
        assert storable(made(status)), status
    assert not storable(made("crash"))  # the host's failures arrive as crashes
    assert not storable(made("ok", provisional=True))
    assert not storable(made("ok", reused="run"))
    with EvaluationCache(tmp_path / "c.sqlite3") as cache:
        assert not cache.put("f", "k", made("crash"))
        assert cache.get("f", "k") is None


def test_threads_share_one_cache(tmp_path: Path):
    fingerprint, _, evaluation = _lmc_evaluation()
    errors: list[BaseException] = []
    with EvaluationCache(tmp_path / "c.sqlite3") as cache:

        def work(worker: int) -> None:
            try:
                for i in range(40):
                    key = f"{worker}-{i}"
                    scored = evaluation.model_copy(update={"score": float(i)})
                    assert cache.put(fingerprint, key, scored)
                    found = cache.get(fingerprint, key)
                    assert found is not None and found.score == i
            except BaseException as exc:  # noqa: BLE001 - reported by the test thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        last = cache.get(fingerprint, "5-39")
        assert last is not None and last.score == 39


def test_a_damaged_cache_file_warns_and_runs_without_it(tmp_path: Path, caplog):
    fingerprint, key, evaluation = _lmc_evaluation()
    path = tmp_path / "evaluations.sqlite3"
    path.write_bytes(b"not a database " * 200)
    with caplog.at_level(logging.WARNING), EvaluationCache(path) as cache:
        assert not cache.usable
        assert cache.get(fingerprint, key) is None
        assert not cache.put(fingerprint, key, evaluation)
    assert "evaluating without it" in caplog.text
    # A folder where the file should be: the same.
    with EvaluationCache(tmp_path) as folder:
        assert not folder.usable and folder.get(fingerprint, key) is None


def test_a_damaged_entry_is_a_miss(tmp_path: Path):
    fingerprint, key, evaluation = _lmc_evaluation()
    path = tmp_path / "evaluations.sqlite3"
    with EvaluationCache(path) as cache:
        cache.put(fingerprint, key, evaluation)
    with sqlite3.connect(path) as db:
        db.execute('UPDATE evaluations SET value = \'{"status": "bogus"}\'')
    db.close()
    with EvaluationCache(path) as cache:
        assert cache.get(fingerprint, key) is None
        assert cache.put(fingerprint, key, evaluation)  # and the next put mends it
        assert cache.get(fingerprint, key) is not None


def test_a_program_scored_in_the_sandbox_is_found_under_a_reformatted_copy(tmp_path: Path):
    # The user's task from the examples: one real sandboxed evaluation, stored, and the
    # same program with other comments and layout finds it.
    source = textwrap.dedent(
        """\
        def pack(weights, values, capacity):
            return [0]
        """
    )
    knapsack = _utility(str(ROOT / "examples" / "knapsack_utility.py"), source)
    evaluation = knapsack.judge(source)
    assert evaluation.status == "ok", evaluation.detail
    with EvaluationCache(tmp_path / "c.sqlite3") as cache:
        assert cache.put(knapsack.fingerprint(), program_key(source), evaluation)
        copy = "# packs\ndef pack(weights, values, capacity):  # the entry\n\n  return [ 0 ]\n"
        found = cache.get(knapsack.fingerprint(), program_key(copy))
    assert found is not None and found.score == evaluation.score
