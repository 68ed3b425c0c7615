"""OpenEvolve-style targets run as written: an initial program with EVOLVE-BLOCK markers
and an evaluator.py whose evaluate(program_path) returns metrics, scored in the sandbox
with the evaluator and the program in processes of their own.

The example files are written here, in OpenEvolve's format."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from stop.defaults import LOCAL
from stop.errors import BadInput
from stop.records import ImproveConfig, UtilityOptions
from stop.scoring.blocks import RULE
from stop.scoring.utility import Target, load_utility
from tests.helpers import improve_run, run_stop

PROGRAM = '''"""Find the minimum of a bumpy function."""
import numpy as np


# EVOLVE-BLOCK-START
def search_algorithm(iterations=50, bounds=(-5, 5)):
    best = None
    for _ in range(iterations):
        x, y = np.random.uniform(bounds[0], bounds[1], size=2)
        value = evaluate_function(x, y)
        if best is None or value < best[2]:
            best = (float(x), float(y), value)
    return best
# EVOLVE-BLOCK-END


def evaluate_function(x, y):
    return np.sin(x) * np.cos(y) + np.sin(x * y) + (x**2 + y**2) / 20


def run_search():
    return search_algorithm()
'''

# It prints (to stdout and stderr), checks types as OpenEvolve's examples do, runs the
# program in a thread with a timeout, and imports a module beside it.
EVALUATOR = '''"""How close the found minimum is to the known one."""
import concurrent.futures
import importlib.util
import sys

import numpy as np

from target_value import MINIMUM


def evaluate(program_path):
    spec = importlib.util.spec_from_file_location("program", program_path)
    program = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(program)
    values = []
    for trial in range(3):
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            result = pool.submit(program.run_search).result(timeout=20)
        print("trial", trial, result)
        print("to stderr", file=sys.stderr)
        if not isinstance(result, tuple) or len(result) != 3:
            return {"combined_score": 0.0, "error": f"expected a tuple, got {type(result)}"}
        values.append(float(result[2]))
    return {
        "combined_score": 1.0 / (1.0 + abs(float(np.mean(values)) - MINIMUM)),
        "spread": float(np.std(values)),
    }
'''


@pytest.fixture
def example(tmp_path: Path) -> Path:
    folder = tmp_path / "function_minimization"
    folder.mkdir()
    (folder / "initial_program.py").write_text(PROGRAM)
    (folder / "evaluator.py").write_text(EVALUATOR)
    (folder / "target_value.py").write_text("MINIMUM = -1.519\n")
    return folder


def _utility(folder: Path, evaluator: str | None = None, **options):
    if evaluator is not None:
        (folder / "evaluator.py").write_text(textwrap.dedent(evaluator))
    program = folder / "initial_program.py"
    target = Target(path=program, source=program.read_text())
    return load_utility(str(folder / "evaluator.py"), target, UtilityOptions(**options)), target


def _fenced(program: str) -> str:
    return f"Here it is:\n```python\n{program}```\n"


def test_an_openevolve_example_runs_as_written_and_json_parses(example: Path, tmp_path: Path):
    better = PROGRAM.replace("iterations=50", "iterations=2000")
    outside = PROGRAM.replace("return search_algorithm()", "return (-1.7, 0.68, -1.519)")
    unbalanced = PROGRAM.replace("# EVOLVE-BLOCK-END\n", "")
    script = tmp_path / "script.json"
    script.write_text(json.dumps([_fenced(better), _fenced(outside), _fenced(unbalanced)]))
    done = run_stop(
        "improve",
        "--target",
        "initial_program.py",
        "--utility",
        "evaluator.py",
        "--script",
        str(script),
        "--samples",
        "3",
        "--json",
        cwd=example,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # the whole of stdout: the evaluator printed elsewhere
    by_status = {}
    for candidate in result["candidates"]:
        by_status.setdefault(candidate["evaluation"]["status"], []).append(candidate)
    rejected = [c["evaluation"]["detail"] for c in by_status["rejected"]]
    assert any("outside the EVOLVE-BLOCKs" in d and "-1.519" in d for d in rejected)
    assert any("unbalanced" in d for d in rejected)
    assert result["improved"] and result["best_score"] > result["baseline_score"]
    best = (example / result["best_path"]).read_text()
    assert "iterations=2000" in best
    original = next(c for c in result["candidates"] if c["origin"] == "original")
    assert set(original["evaluation"]["metrics"]) == {"combined_score", "spread"}
    assert original["evaluation"]["metrics"]["spread"] > 0  # trials are seeded apart
    printed = [f["message"] for f in original["evaluation"]["feedback"]]
    assert any("trial 2" in m and "to stderr" in m for m in printed)  # shown to the model


def test_the_model_is_told_which_parts_it_may_edit(example: Path, tmp_path: Path, scripted_model):
    model = scripted_model(["no code"])
    config = ImproveConfig(
        target=example / "initial_program.py",
        utility=str(example / "evaluator.py"),
        runs_dir=tmp_path / "runs",
        budget=LOCAL.improve.model_copy(update={"max_responses_per_call": 1}),
    )
    improve_run(config, backend=model)
    (prompt,) = model.prompts
    assert RULE in prompt.message and "How close the found minimum is" in prompt.message


def test_values_cross_the_sandbox_with_their_types(example: Path):
    utility, target = _utility(
        example,
        """
        import importlib.util
        import numpy as np

        def evaluate(program_path):
            spec = importlib.util.spec_from_file_location("p", program_path)
            p = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(p)
            out = p.shapes((1, 2), np.arange(6.0).reshape(2, 3), key={3: "x"})
            assert isinstance(out[0], tuple) and out[0] == (1, 2), out
            assert isinstance(out[1], np.ndarray) and out[1].shape == (2, 3), out
            assert out[1].dtype == np.float64 and out[2] == {3: "x"}, out
            assert isinstance(out[3], np.int64) and p.LIMIT == 7
            return {"combined_score": 1.0}
        """,
    )
    program = "import numpy as np\nLIMIT = 7\ndef shapes(pair, grid, key):\n"
    program += "    return pair, grid * 1.0, key, np.int64(3)\n"
    evaluation = utility.evaluate(program)
    assert (evaluation.status, evaluation.score) == ("ok", 1.0), evaluation


def test_artifacts_errors_and_output_reach_the_model_as_feedback(example: Path):
    utility, _ = _utility(
        example,
        """
        class EvaluationResult:  # the shape of OpenEvolve's: metrics and artifacts
            def __init__(self, metrics, artifacts):
                self.metrics, self.artifacts = metrics, artifacts

        def evaluate(program_path):
            print("checked 4 cases")
            return EvaluationResult(
                {"accuracy": 0.25, "speed": 0.75, "error": "case 3 failed"},
                {"failed_check": "expected 5, got 4"},
            )
        """,
    )
    evaluation = utility.evaluate("def f():\n    return 1\n")
    assert evaluation.score == pytest.approx(0.5)  # the mean: no combined_score
    messages = " | ".join(f.message or "" for f in evaluation.feedback)
    assert "case 3 failed" in messages and "expected 5, got 4" in messages
    assert "checked 4 cases" in messages
    assert evaluation.metrics == {"accuracy": 0.25, "speed": 0.75}


def test_a_candidate_that_raises_reaches_the_evaluator_as_an_exception(example: Path):
    utility, _ = _utility(
        example,
        """
        import importlib.util

        def evaluate(program_path):
            spec = importlib.util.spec_from_file_location("p", program_path)
            p = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(p)
            try:
                p.run_search()
            except Exception as exc:
                return {"combined_score": 0.0, "error": str(exc)}
            return {"combined_score": 1.0}
        """,
    )
    evaluation = utility.evaluate("def run_search():\n    return 1 / 0\n")
    assert evaluation.score == 0.0 and "ZeroDivisionError" in (evaluation.detail or "")


def test_an_evaluator_that_raises_scores_zero_with_its_traceback(example: Path):
    utility, _ = _utility(example, "def evaluate(program_path):\n    assert False, 'bad case'\n")
    evaluation = utility.evaluate("x = 1\n")
    assert evaluation.status == "crash" and evaluation.score == 0.0
    assert "AssertionError: bad case" in (evaluation.detail or "")
    assert "AssertionError" in (evaluation.feedback[0].message or "")


def test_the_cascade_stops_below_a_threshold(example: Path):
    cascade = """
        import importlib.util

        def _load(path):
            spec = importlib.util.spec_from_file_location("p", path)
            p = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(p)
            return p

        def evaluate_stage1(program_path):
            return {"runs": float(_load(program_path).quality())}

        def evaluate_stage2(program_path):
            return {"combined_score": _load(program_path).quality() / 2, "stage2_ran": 1.0}

        def evaluate(program_path):
            raise AssertionError("the cascade runs instead")
        """
    utility, _ = _utility(example, cascade)
    low = utility.evaluate("def quality():\n    return 0.3\n")
    assert low.metrics == {"runs": 0.3} and low.score == pytest.approx(0.3)
    high = utility.evaluate("def quality():\n    return 0.8\n")
    assert high.metrics["stage2_ran"] == 1.0 and high.score == pytest.approx(0.4)
    strict, _ = _utility(example, cascade, custom={"cascade_thresholds": [0.9]})
    assert "stage2_ran" not in strict.evaluate("def quality():\n    return 0.8\n").metrics


# Each of these writes its own score when run in the evaluator's process (as OpenEvolve
# runs it): through the evaluator's frames, the garbage collector, numpy, the evaluator's
# module, or a subclass that lies. What (5, 5, 5) earns honestly is the most it may get.
FORGERIES = {
    "frames": """
        import sys
        def run_search():
            for frame in list(sys._current_frames().values()):
                while frame is not None:
                    if "MINIMUM" in frame.f_globals:
                        frame.f_globals["MINIMUM"] = 5.0
                    frame = frame.f_back
            return (5.0, 5.0, 5.0)
        """,
    "gc": """
        import gc
        def run_search():
            for thing in gc.get_objects():
                if isinstance(thing, dict) and "MINIMUM" in thing:
                    thing["MINIMUM"] = 5.0
            return (5.0, 5.0, 5.0)
        """,
    "patched numpy": """
        import numpy as np
        np.mean = lambda values: -1.519
        def run_search():
            import numpy
            numpy.mean = lambda values: -1.519
            return (5.0, 5.0, 5.0)
        """,
    "lying subclass": """
        class Liar(tuple):
            def __float__(self):
                return -1.519
            def __getitem__(self, i):
                return -1.519
        def run_search():
            return Liar((5.0, 5.0, 5.0))
        """,
    "own module": """
        import sys
        def run_search():
            evaluator = sys.modules.get("evaluation_module")
            if evaluator is not None:
                evaluator.MINIMUM = 5.0
            return (5.0, 5.0, 5.0)
        """,
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_a_candidate_cannot_forge_its_score(example: Path, name: str):
    utility, target = _utility(example)
    honest = 1.0 / (1.0 + abs(5.0 - -1.519))  # what (5, 5, 5) earns
    evaluation = utility.evaluate(textwrap.dedent(FORGERIES[name]))
    assert evaluation.score <= honest + 1e-9, (name, evaluation)


def test_the_timeout_kills_the_evaluator_and_the_program(example: Path):
    utility, _ = _utility(example, timeout_s=1.0)
    hang = "def run_search():\n    while True:\n        pass\n"
    evaluation = utility.evaluate(hang)
    assert evaluation.status in ("timeout", "crash") and evaluation.score == 0.0
    assert evaluation.seconds < 30


def _improve_with(example: Path, script):
    """`stop improve` on the example with a scripted model (the embedded one may not be
    installed: an ordinary user's test run has none)."""
    replies = str(script(["no code"]))
    return run_stop(
        "improve",
        *("--target", "initial_program.py", "--utility", "evaluator.py", "--script", replies),
        cwd=example,
    )


@pytest.mark.parametrize(
    ("evaluator", "message"),
    [
        ("def score(path):\n    return 1\n", "defines neither build"),
        ("def evaluate(program_path):\n    return {'note': 'fine'}\n", "no numeric metric"),
        ("def evaluate(program_path):\n    return 0.5\n", "a dict of metrics"),
        ("def evaluate(program_path)\n    return {}\n", "syntax error"),
    ],
)
def test_bad_evaluators_are_bad_input(example: Path, evaluator: str, message: str, script):
    (example / "evaluator.py").write_text(evaluator)
    done = _improve_with(example, script)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (example / "runs").exists()


def test_unbalanced_markers_in_the_target_are_bad_input(example: Path, script):
    program = example / "initial_program.py"
    program.write_text(PROGRAM.replace("# EVOLVE-BLOCK-END\n", ""))
    done = _improve_with(example, script)
    assert done.returncode == 2 and "unbalanced EVOLVE-BLOCK markers" in done.stderr
    assert not (example / "runs").exists()


def test_the_evaluator_is_never_run_in_the_host(example: Path, tmp_path: Path):
    marker = tmp_path / "ran-in-the-host"
    source = (
        f"try:\n    open({str(marker)!r}, 'w').close()\nexcept OSError:\n    pass\n"
        "def evaluate(path):\n    return {'x': 1.0}\n"
    )
    utility, _ = _utility(example, source)
    assert utility.evaluate("x = 1\n").score == 1.0
    assert not marker.exists()  # the jail shows the host's files read-only, if at all


def test_load_utility_refuses_a_file_with_neither_entry_point(example: Path):
    with pytest.raises(BadInput, match="neither build"):
        _utility(example, "x = 1\n")


def test_an_evaluator_may_run_the_program_in_a_subprocess(example: Path):
    utility, _ = _utility(
        example,
        """
        import json, subprocess, sys

        def evaluate(program_path):
            script = (
                "import importlib.util, json, sys\\n"
                "spec = importlib.util.spec_from_file_location('p', sys.argv[1])\\n"
                "p = importlib.util.module_from_spec(spec)\\n"
                "spec.loader.exec_module(p)\\n"
                "print(json.dumps(p.run_search()))\\n"
            )
            done = subprocess.run(
                [sys.executable, "-c", script, program_path], capture_output=True, text=True
            )
            assert done.returncode == 0, done.stderr
            return {"combined_score": json.loads(done.stdout)[0]}
        """,
    )
    evaluation = utility.evaluate("def run_search():\n    return (0.25, 1.0)\n")
    assert (evaluation.status, evaluation.score) == ("ok", 0.25), evaluation


@pytest.mark.parametrize("module", ["scipy", "openevolve"])
def test_installed_packages_import_in_the_evaluator(example: Path, module: str):
    pytest.importorskip(module)  # only where it is installed beside stop
    utility, _ = _utility(
        example,
        f"""
        import {module}

        def evaluate(program_path):
            return {{"combined_score": 1.0, "version": {module}.__version__}}
        """,
    )
    assert utility.evaluate("x = 1\n").score == 1.0
