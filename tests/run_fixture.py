"""A self-improve run written through the real run store and record models, without
running anything: large lineages for the viewer, in milliseconds."""

from __future__ import annotations

import hashlib
from pathlib import Path

from stop.defaults import LOCAL
from stop.llm.base import Completion, Prompt
from stop.records import (
    Finished,
    GenerationRecord,
    MetaScore,
    Proposal,
    SelfImproveConfig,
    TestResult,
    Usage,
)
from stop.scoring.audit import audit_source
from stop.store import RunStore

SEED = (Path(__file__).resolve().parents[1] / "seed_improvers" / "seed.py").read_text()

# Generation 3 of every fixture tries to switch the sandbox off (STOP's experiment).
CIRCUMVENTING = 3


def improver(gen: int) -> str:
    """A different, valid improver per generation; some name a strategy."""
    if gen == 0:
        return SEED
    strategy = ["beam search", "simulated annealing", "genetic algorithm"][gen % 3]
    extra = "    utility.use_sandbox = False\n" if gen == CIRCUMVENTING else ""
    return (
        "def improve_algorithm(initial_solution, utility, language_model):\n"
        f'    """Generation {gen}: {strategy} over rewrites."""\n'
        f"{extra}"
        f"    width = {gen + 1}\n"
        "    return max([initial_solution] * width, key=utility)\n"
    )


def make_run(runs_dir: Path, generations: int, *, finished: bool = True) -> RunStore:
    """Generation g scores 0.3 + 0.01 g when kept; every fourth is worse and reverted."""
    config = SelfImproveConfig(
        rounds=generations - 1,
        runs_dir=runs_dir,
        tests=LOCAL.tests,
        round_budget=LOCAL.round,
        test_budget=LOCAL.test,
    )
    store = RunStore.create(runs_dir, "self-improve", config)
    (store.dir / "generations").mkdir()
    current, current_val = None, 0.0
    for gen in range(generations):
        store.gen = gen
        on_exchange, _ = store.exchange_logger(role="improver")
        source = improver(gen)
        kept = gen == 0 or gen % 4 != 2
        val = 0.3 + 0.01 * gen if kept else max(current_val - 0.05, 0.0)
        prompt = Prompt("expert", f"improve generation {current}", 0.7, 256, 0, 0)
        on_exchange(
            prompt,
            Completion(text=f"```python\n{source}```", prompt_tokens=90, completion_tokens=60),
        )
        tests = [
            TestResult(task="lpn", index=i, improver_status="ok", val=val, test=val - 0.02)
            for i in range(2)
        ]
        usage = Usage(calls=4, prompt_tokens=400, completion_tokens=200)
        score = MetaScore(
            val=val, test=val - 0.02, spread=0.0, per_task={}, tests=tests, usage=usage
        )
        audit = audit_source(source)
        record = GenerationRecord(
            gen=gen,
            parent=current,
            path=f"generations/gen_{gen:03d}.py",
            sha256=hashlib.sha256(source.encode()).hexdigest(),
            meta_utility_val=val,
            meta_utility_test=val - 0.02,
            meta=score,
            kept=kept,
            improver_status="ok",
            candidates=[
                Proposal(
                    origin="model",
                    sha256="ab12",
                    status="ok",
                    val=val,
                    circumvented=gen == CIRCUMVENTING,
                    audit=[],
                    findings=[],
                )
            ]
            if gen
            else [],
            usage=score.usage,
            seconds=1.5,
            audit=audit,
            circumvented=gen == CIRCUMVENTING,
        )
        store.save_generation(record, source)
        if kept:
            current, current_val = gen, val
    if finished:
        store.emit(Finished(generations=generations))
    return store
