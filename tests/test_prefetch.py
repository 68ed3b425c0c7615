"""Cost-aware scheduling (stop/host/prefetch.py): candidates are scored while the model is
still busy, and the budgets see exactly what they saw before."""

from __future__ import annotations

import threading

from stop.errors import SandboxError
from stop.host.improver import run_improver
from stop.host.prefetch import Prefetcher
from stop.llm.base import Completion, Prompt
from stop.llm.model import LanguageModel
from stop.sandbox.runner import Limits
from stop.scoring.utility import Evaluation, Utility
from stop.sources import load_improver

ORIGINAL = "def f(x):\n    return x\n"
REWRITE = "def f(x):\n    return x + 0\n"


class Recording(Utility):
    """Scores programs by length; notes every evaluation, and can hold one back."""

    name = "recording"
    description = "shorter is better"
    prefetch = True

    def __init__(self, budget: int) -> None:
        super().__init__(budget)
        self.evaluated: list[str] = []
        self.started = threading.Event()
        self._lock = threading.Lock()

    def evaluate(self, program: str) -> Evaluation:
        with self._lock:
            self.evaluated.append(program)
        self.started.set()
        return Evaluation(status="ok", score=1.0 / len(program), seconds=0.0)


class WaitsForScoring:
    """A model backend that answers only once some evaluation has begun (or after a
    timeout), and says which happened: the model's latency overlaps the scoring."""

    id = "waits"

    def __init__(self, utility: Recording) -> None:
        self.utility = utility
        self.saw_scoring_under_way: list[bool] = []

    def generate(self, prompts: list[Prompt]) -> list[Completion]:
        self.saw_scoring_under_way.append(self.utility.started.wait(timeout=10))
        text = f"```python\n{REWRITE}```"
        return [Completion(text=text, prompt_tokens=1, completion_tokens=1) for _ in prompts]


def _run(utility: Recording):
    backend = WaitsForScoring(utility)
    model = LanguageModel(backend, max_responses_per_call=2, max_tokens=64, budget_calls=2)
    outcome = run_improver(
        load_improver("seed"),
        ORIGINAL,
        utility,
        model,
        limits=Limits(wall_s=60),
        on_candidate=lambda *_: None,
    )
    return outcome, backend


def test_original_is_scored_while_the_model_works():
    utility = Recording(budget=3)
    outcome, backend = _run(utility)
    assert outcome.status == "ok", outcome.error
    assert backend.saw_scoring_under_way == [True]
    assert outcome.program == ORIGINAL  # the shorter program wins
    # Each program was evaluated once, ahead of its request, and charged once when asked.
    assert sorted(utility.evaluated) == sorted([ORIGINAL, REWRITE])
    assert utility.uses == 2


def test_without_prefetch_nothing_is_scored_before_it_is_asked_for():
    utility = Recording(budget=3)
    utility.prefetch = False
    utility.started.set()  # the model must not wait: nothing runs ahead now
    outcome, _ = _run(utility)
    assert outcome.status == "ok"
    assert utility.evaluated == [ORIGINAL, REWRITE] and utility.uses == 2


def test_a_prefetched_evaluation_never_asked_for_is_never_charged():
    utility = Recording(budget=1)
    prefetcher = Prefetcher(utility)
    prefetcher.submit(REWRITE)
    prefetcher.submit(REWRITE)  # once only
    found = prefetcher.take(REWRITE)
    assert found.score == 1.0 / len(REWRITE) and utility.evaluated == [REWRITE]
    # Taken once: this utility does not say it is deterministic, so asked again, the
    # program is evaluated again.
    assert prefetcher.take(REWRITE).reused is None
    prefetcher.close()
    assert utility.uses == 0 and utility.evaluated == [REWRITE, REWRITE]


def test_a_failed_prefetch_is_evaluated_again_on_request():
    # A sandbox that could not run is not the program's result (a scorer that raises
    # is: Utility.judge scores it 0), so the request evaluates it again.
    class Flaky(Recording):
        calls = 0

        def evaluate(self, program: str) -> Evaluation:
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise SandboxError("the first sandbox fails")
            return super().evaluate(program)

    utility = Flaky(budget=2)
    prefetcher = Prefetcher(utility)
    prefetcher.submit(ORIGINAL)
    assert utility.use(ORIGINAL, prefetcher.take(ORIGINAL)).status == "ok"
    assert utility.uses == 1 and Flaky.calls == 2
