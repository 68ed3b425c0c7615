"""LMC task families of the paper (section 3.1, appendix B): Add-N and random programs.

A task is a list of input/output pairs split into training pairs (shown to a model) and
test pairs (which score it). Every task is drawn from its own seeded `random.Random`, so a
task is the same whichever list it is generated in and on every machine.

- Add-N is the tasks add-2 .. add-N; add-K sums K inputs. (The paper: "Given an N, the
  dataset effectively contains only N - 1 different tasks".) 3 training and 3 test pairs;
  values uniform in 1..99: the paper does not say, and two-digit values (the classic LMC
  word) make a program that copies outputs from the prompt fail the test pairs.
- Random programs follow appendix B: input length uniform in 2..N_max (8), 2 x 4 input
  lists with values uniform in 1..x_max; then programs that alternate an opcode and an
  operand in 0..length-2, length-1 such pairs and then one more with probability
  epsilon (0.001) each time, else HLT; programs with a runtime error on any of the
  inputs are discarded and a fresh program is drawn for the same inputs. Opcodes are
  drawn from the ten that take an operand: drawing HLT mid-program, as table 1 would
  allow, always gives a syntax error and a rejection, so this is the same distribution.
  x_max defaults to 10: the paper does not give its value.
"""

from __future__ import annotations

import random
import re
from typing import Final, Literal, cast

from pydantic import BaseModel, ConfigDict

from stop.errors import BadInput, StopError
from stop.lmc.machine import MAX_INPUTS, OPERAND_OPS, parse, run

FORMAT_VERSION: Final = 1
ADD_VALUES = (1, 99)  # inclusive range of Add-N input values
ADD_PAIRS = 3  # training pairs, and as many test pairs
RANDOM_N_MAX = 8  # appendix B, table 2
RANDOM_X_MAX = 10
RANDOM_PAIRS = 4  # appendix B, table 2
RANDOM_EPSILON = 0.001  # appendix B, table 2
MAX_ATTEMPTS = 100_000  # programs drawn for one task before giving up (never reached)

_NAME_FORMS = "add-K or add-K-SEED (K in 2..11), random-SEED-INDEX or random-SEED-INDEX-nN-xX"
_NUMBER = r"(0|[1-9][0-9]*)"
_ADD_NAME = re.compile(rf"add-{_NUMBER}(?:-{_NUMBER})?")
_RANDOM_NAME = re.compile(rf"random-{_NUMBER}-{_NUMBER}(?:-n{_NUMBER}-x{_NUMBER})?")


# One input/output pair: (inputs, output), the shape `reward` takes; JSON [[3, 5], 8].
Pair = tuple[tuple[int, ...], int]


class Task(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: Literal[1] = FORMAT_VERSION
    name: str  # task_by_name(name) gives this task back
    family: Literal["add", "random"]
    seed: int
    input_length: int  # every input list of the task has this many values
    value_range: tuple[int, int]  # inclusive range the input values were drawn from
    train: tuple[Pair, ...]  # shown to the model
    test: tuple[Pair, ...]  # scores the program: reward(program, task.test)
    program: str | None = None  # random family: the program that produced the outputs


def _pairs(inputs: list[list[int]], outputs: list[int]) -> tuple[Pair, ...]:
    return tuple((tuple(x), y) for x, y in zip(inputs, outputs, strict=True))


def add_task(k: int, seed: int = 0) -> Task:
    """The task of adding k inputs."""
    if not 2 <= k <= MAX_INPUTS:
        raise BadInput(f"add-{k}: K must be in 2..{MAX_INPUTS} (the machine holds 11 inputs)")
    _check_seed(seed)
    rng = random.Random(f"lmc-add:{seed}:{k}")
    low, high = ADD_VALUES
    inputs = [[rng.randint(low, high) for _ in range(k)] for _ in range(2 * ADD_PAIRS)]
    outputs = [sum(values) for values in inputs]
    return Task(
        name=f"add-{k}" if seed == 0 else f"add-{k}-{seed}",
        family="add",
        seed=seed,
        input_length=k,
        value_range=ADD_VALUES,
        train=_pairs(inputs[:ADD_PAIRS], outputs[:ADD_PAIRS]),
        test=_pairs(inputs[ADD_PAIRS:], outputs[ADD_PAIRS:]),
    )


def add_tasks(n_max: int, seed: int = 0) -> list[Task]:
    """The Add-N family for N = n_max: add-2 .. add-n_max."""
    if not 2 <= n_max <= MAX_INPUTS:
        raise BadInput(f"Add-N: N must be in 2..{MAX_INPUTS}, got {n_max}")
    return [add_task(k, seed) for k in range(2, n_max + 1)]


def random_task(
    seed: int,
    index: int,
    n_max: int = RANDOM_N_MAX,
    x_max: int = RANDOM_X_MAX,
    epsilon: float = RANDOM_EPSILON,
) -> Task:
    """Task number `index` of the random-programs family drawn with `seed` (appendix B)."""
    _check_seed(seed)
    _check_seed(index)
    if not 2 <= n_max <= MAX_INPUTS:
        raise BadInput(f"random programs: N_max must be in 2..{MAX_INPUTS}, got {n_max}")
    if x_max < 1:
        raise BadInput(f"random programs: x_max must be at least 1, got {x_max}")
    if not 0 <= epsilon < 1:
        raise BadInput(f"random programs: epsilon must be in [0, 1), got {epsilon}")
    rng = random.Random(f"lmc-random:{seed}:{index}")
    length = rng.randint(2, n_max)
    inputs = [[rng.randint(1, x_max) for _ in range(length)] for _ in range(2 * RANDOM_PAIRS)]
    for _ in range(MAX_ATTEMPTS):
        program = _random_program(rng, length, epsilon)
        outcomes = [run(program, values) for values in inputs]
        if all(outcome.kind == "ok" for outcome in outcomes):
            break
    else:  # unreachable in practice: `LDA 0 ... HLT`-like programs always run
        raise StopError(f"no runnable random program in {MAX_ATTEMPTS} attempts")
    outputs = cast(list[int], [outcome.output for outcome in outcomes])  # all "ok": ints
    defaults = (n_max, x_max) == (RANDOM_N_MAX, RANDOM_X_MAX)
    return Task(
        name=f"random-{seed}-{index}" + ("" if defaults else f"-n{n_max}-x{x_max}"),
        family="random",
        seed=seed,
        input_length=length,
        value_range=(1, x_max),
        train=_pairs(inputs[:RANDOM_PAIRS], outputs[:RANDOM_PAIRS]),
        test=_pairs(inputs[RANDOM_PAIRS:], outputs[RANDOM_PAIRS:]),
        program=program,
    )


def _random_program(rng: random.Random, length: int, epsilon: float) -> str:
    pairs = length - 1
    while rng.random() < epsilon:
        pairs += 1
    tokens: list[str] = []
    for _ in range(pairs):
        tokens += [rng.choice(OPERAND_OPS), str(rng.randint(0, length - 2))]
    tokens.append("HLT")
    text = " ".join(tokens)
    parse(text)  # the alternation guarantees the syntax; a failure here is a bug
    return text


def random_tasks(
    count: int,
    seed: int = 0,
    n_max: int = RANDOM_N_MAX,
    x_max: int = RANDOM_X_MAX,
) -> list[Task]:
    """The first `count` tasks of the random-programs family drawn with `seed`."""
    if count < 0:
        raise BadInput(f"random programs: count must be non-negative, got {count}")
    return [random_task(seed, index, n_max, x_max) for index in range(count)]


def task_by_name(name: str) -> Task:
    """A task from its name: add-4, add-4-7 (seed 7), random-0-12 (seed 0, index 12)."""
    if match := _ADD_NAME.fullmatch(name):
        k, seed = int(match[1]), int(match[2] or 0)
        if 2 <= k <= MAX_INPUTS:
            return add_task(k, seed)
    elif match := _RANDOM_NAME.fullmatch(name):
        seed, index = int(match[1]), int(match[2])
        n_max = int(match[3]) if match[3] else RANDOM_N_MAX
        x_max = int(match[4]) if match[4] else RANDOM_X_MAX
        if 2 <= n_max <= MAX_INPUTS and x_max >= 1:
            return random_task(seed, index, n_max, x_max)
    raise BadInput(f"unknown LMC task {name!r}: expected {_NAME_FORMS}")


def _check_seed(value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadInput(f"seeds and indices must be non-negative integers, got {value!r}")
