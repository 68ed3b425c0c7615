"""No evaluation paid twice within a run, and timings taken beside the embedded model's
generation marked provisional (stop/host/prefetch.py)."""

from __future__ import annotations

import threading

from stop.bench.pipeline import VARIANTS
from stop.host.prefetch import Prefetcher
from stop.llm.base import Completion, Prompt
from stop.llm.model import LanguageModel
from stop.llm.scripted import ScriptedBackend
from stop.records import Budget, ImproveConfig, ModelSettings, UtilityOptions
from stop.scoring.utility import Target, load_utility
from tests.helpers import FIB, ROOT, calibrated, improve_run

KNAPSACK = ROOT / "examples" / "knapsack.py"
KNAPSACK_UTILITY = ROOT / "examples" / "knapsack_utility.py"
GREEDY = VARIANTS[2]  # greedy by value
# The same program twice, as a model repeats itself: a comment and spacing apart.
SAME = GREEDY.replace("picked, load = [], 0", "picked, load = [], 0  # start empty\n")


def test_a_repeated_program_is_scored_once_and_the_reuse_shown(tmp_path):
    replies = [f"```python\n{GREEDY}```", f"```python\n{SAME}```"]
    config = ImproveConfig(
        target=KNAPSACK,
        utility=str(KNAPSACK_UTILITY),
        model=ModelSettings(backend="scripted"),
        budget=Budget(model_calls=2, max_responses_per_call=2, max_tokens=64, evaluations=5),
        runs_dir=tmp_path / "runs",
    )
    result = improve_run(config, backend=ScriptedBackend(replies))
    by_program = {
        (tmp_path / "runs" / result.run_id / c.path).read_text(): c.evaluation
        for c in result.candidates
        if c.origin == "model"
    }
    first, second = by_program[GREEDY], by_program[SAME]
    assert first.reused is None and second.reused == "run"
    assert second.score == first.score and second.status == "ok"


def test_a_noisy_utility_measures_every_copy_again(tmp_path):
    target = Target(path=FIB, source=FIB.read_text())
    speed = calibrated(load_utility("speed", target, UtilityOptions()), target)
    prefetcher = Prefetcher(speed)
    prefetcher.submit(target.source)
    first = prefetcher.take(target.source)
    prefetcher.submit(target.source + "# again\n")
    again = prefetcher.take(target.source + "# again\n")
    prefetcher.close()
    assert first is not None and again is not None
    assert first.reused is None and again.reused is None


class _Generating:
    """A backend that computes here (like the embedded model) and holds its generation
    until let go: the timing in between shares the cores with it."""

    id = "generating"
    shares_cores = True

    def __init__(self) -> None:
        self.entered, self.go = threading.Event(), threading.Event()

    def generate(self, prompts: list[Prompt]) -> list[Completion]:
        self.entered.set()
        self.go.wait(30)
        return [Completion(text="x", prompt_tokens=1, completion_tokens=1) for _ in prompts]


def test_a_timing_beside_the_embedded_model_is_provisional():
    target = Target(path=FIB, source=FIB.read_text())
    speed = calibrated(load_utility("speed", target, UtilityOptions()), target)
    backend = _Generating()
    model = LanguageModel(backend, max_responses_per_call=1, max_tokens=16, budget_calls=4)
    prefetcher = Prefetcher(speed, model=model)
    asking = threading.Thread(target=model.batch_prompt, args=("e", ["m"]))
    asking.start()
    backend.entered.wait(30)
    beside = prefetcher.judge(target.source)
    backend.go.set()
    asking.join(30)
    alone = prefetcher.judge(target.source)
    prefetcher.close()
    assert beside.provisional and beside.status == "ok"
    assert not alone.provisional
