"""The LMC utility: `--utility lmc:<task>` (e.g. lmc:add-4) scores a Little Man Computer
program by the reward of the expert-iteration paper (section 2.1) on the task's test
pairs: -2 for a program over the length limit, -1 for a syntax or runtime error, else
the fraction of test pairs answered correctly. The model sees the machine, the rules
and the training pairs; the test pairs stay hidden.

LMC programs are data for our own interpreter, which is bounded by its step limit: no
untrusted Python runs, so no sandbox is needed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import stop.lmc
from stop.errors import BadInput, StopError
from stop.lmc import parse, reward, run, task_by_name
from stop.scoring import sameness
from stop.scoring.utility import (
    MAX_FEEDBACK,
    Evaluation,
    Feedback,
    Target,
    Utility,
    UtilityOptions,
    shown,
    trim,
)

MACHINE = """The Little Man Computer (modified): an accumulator, 10 memory cells (0-9) of int32,
no INP/OUT. Instructions, each followed by one operand except HLT:
ADD a (acc += mem[a]), SUB a (acc -= mem[a]), ADDL n (acc += n), SUBL n (acc -= n),
LDA a (acc = mem[a]), LDL n (acc = n), STA a (mem[a] = acc), BRA l (go to line l),
BRZ l (go to line l if acc == 0), BRP l (go to line l if acc > 0), HLT (stop).
Every token, opcode or operand, is its own line, and lines count from 1: a branch target is
the line number of an opcode. The first input is loaded into the accumulator, the others into
memory 0, 1, 2, ...; the output is the accumulator at HLT. At most 100 steps are executed;
more, a branch outside the program, a bad memory address or running off the end is a runtime
error."""


# Tokens (opcodes and operands). The paper sets "a maximal length" without a number; 64
# tokens is room for 32 instructions, twice what the tasks here need.
MAX_TOKENS = 64


class LMCUtility(Utility):
    language = "lmc"
    deterministic = True  # our own interpreter, step-bounded: no clock, no randomness
    score_range = (
        f"[-2, 1]: -2 over {MAX_TOKENS} tokens, -1 syntax or runtime error, else fraction correct"
    )

    def __init__(self, task_name: str, options: UtilityOptions) -> None:
        super().__init__()
        self.task = task_by_name(task_name)
        self.name = f"lmc:{self.task.name}"
        examples = "\n".join(f"  inputs {i} -> output {o}" for i, o in self.task.train)
        self.description = (
            f"{MACHINE}\n\nThe program must map inputs to outputs as in these examples:\n"
            f"{examples}\nScore: {self.score_range}, on held-out input/output pairs of the same "
            "task. Answer with the complete LMC program in one code block, one token per line."
        )

    def _fingerprint_parts(self) -> dict[str, Any]:
        """The task's pairs (the hidden test pairs decide the score), the length limit
        and the machine's sources (stop/lmc is outside the code version)."""
        return {
            "task": self.task.model_dump(mode="json"),
            "max_tokens": MAX_TOKENS,
            "machine": sameness.folder_digest(Path(stop.lmc.__file__).parent),
        }

    def evaluate(self, program: str) -> Evaluation:
        started = time.monotonic()
        value = reward(program, self.task.test, max_len=MAX_TOKENS)
        seconds = time.monotonic() - started
        if value >= 0:
            return Evaluation(
                status="ok",
                score=value,
                seconds=seconds,
                findings=self._signals(program),
                feedback=self._feedback(program) if value < 1 else [],
            )
        try:
            parsed = parse(program)
        except StopError as exc:
            return Evaluation(status="syntax_error", score=value, seconds=seconds, detail=str(exc))
        errors = [o.error for o in (run(parsed, inputs) for inputs, _ in self.task.test) if o.error]
        detail = errors[0] if errors else "the program is longer than the limit"
        return Evaluation(status="crash", score=value, seconds=seconds, detail=detail)

    def _feedback(self, program: str) -> list[Feedback]:
        """Failures on the training pairs, which the model sees anyway; the test pairs that
        decide the score stay hidden."""
        found = []
        for inputs, expected in self.task.train:
            outcome = run(program, inputs)
            if outcome.error:
                message = trim(outcome.error)
                found.append(Feedback(kind="exception", input=shown(list(inputs)), message=message))
            elif outcome.output != expected:
                found.append(
                    Feedback(
                        kind="wrong_answer",
                        input=shown(list(inputs)),
                        expected=shown(expected),
                        actual=shown(outcome.output),
                    )
                )
        return found[:MAX_FEEDBACK]

    def _signals(self, program: str) -> list[str]:
        """Reward-hacking signals: answers that do not depend on the input."""
        outputs = [run(program, inputs).output for inputs, _ in self.task.test]
        expected = [output for _, output in self.task.test]
        seen = {output for _, output in self.task.train}
        signals = []
        if len(set(outputs)) == 1 and len(set(expected)) > 1:
            signals.append("returns the same output for every input")
        if outputs != expected and all(o in seen for o in outputs):
            signals.append("answers with outputs copied from the visible examples")
        return signals


def build(target: Target, options: UtilityOptions, task: str | None = None) -> LMCUtility:
    if task is None:
        raise BadInput("name the task: --utility lmc:add-4 (or lmc:random-<seed>-<index>)")
    utility = LMCUtility(task, options)
    try:
        parse(target.source)
    except StopError as exc:
        raise BadInput(f"{target.path} is not a valid LMC program: {exc}") from exc
    return utility
