"""The reference Little Man Computer of the expert-iteration paper (appendix A).

Reading of the paper, and the choices it leaves open:

- A program is a sequence of whitespace-separated tokens. Every token (opcode or operand)
  is its own "line" and lines count from 1, whether the text has one token per line (the
  paper's listing) or several on one line; blank lines do not count. Branch operands are
  these line numbers: in `LDL 1 STA 0 LDL 10 SUB 0 BRP 7 HLT` line 7 is the SUB.
- ADD SUB ADDL SUBL LDA LDL STA BRA BRZ BRP take one integer operand each; HLT takes none.
  Opcodes are upper case, as in the paper. An operand is a decimal integer (optional sign)
  within int32. Anything else is a syntax error, found before the program runs.
- Ten memory cells and the accumulator hold int32. Arithmetic wraps modulo 2**32 (two's
  complement) rather than failing: the paper says only that cells hold any int32, and
  wrapping is what an int32 machine does, so every program with in-range literals and
  inputs keeps running with well-defined values.
- Input: the first value goes to the accumulator, the rest to cells 0, 1, 2, ... (so at
  most 11 values); cells not loaded start at 0, as does the accumulator on empty input.
  Output: the accumulator at HLT.
- BRZ branches when the accumulator is 0, BRP when it is strictly positive: that is what
  makes the appendix's first example stop "when the accumulator is zero".
- Runtime errors, each found only when the offending instruction executes: a memory
  operand outside 0..9; a taken branch to a line outside 1..len(tokens); a taken branch
  to a line holding an operand (execution can only resume at an opcode, so this is an
  error rather than a reinterpretation of the operand); running past the last token
  without HLT; and a step limit.
- Steps: each executed instruction is one step, HLT included (the paper's "each line
  counting as a single time step", read per instruction: an operand is not executed on
  its own). At most t_max (100) instructions execute; a program that would start a
  (t_max + 1)-th is stopped with a runtime error. `Outcome.steps` counts the instructions
  that started, the failing one included. Running off the end is checked before the step
  limit: no instruction is being started there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from stop.errors import BadInput

T_MAX = 100  # executed instructions, appendix A
MEMORY_CELLS = 10
MAX_INPUTS = 1 + MEMORY_CELLS  # the accumulator, then every cell
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

MEMORY_OPS = ("ADD", "SUB", "LDA", "STA")
BRANCH_OPS = ("BRA", "BRZ", "BRP")
OPERAND_OPS = ("ADD", "SUB", "ADDL", "SUBL", "LDA", "LDL", "STA", "BRA", "BRZ", "BRP")
OPCODES = (*OPERAND_OPS, "HLT")

OutcomeKind = Literal["ok", "syntax", "runtime", "truncation"]

_INTEGER = re.compile(r"[+-]?[0-9]+")


class LMCSyntaxError(BadInput):
    """The program text is not a valid LMC program (a BadInput, so the CLI exits 2)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line  # the token line at fault, 1-based; None for an empty program


@dataclass(frozen=True, slots=True)
class Instruction:
    op: str
    operand: int | None  # None only for HLT
    line: int  # token line of the opcode, 1-based


@dataclass(frozen=True)
class Program:
    """A parsed program: its instructions and how many token lines the text had."""

    instructions: tuple[Instruction, ...]
    n_tokens: int
    # Token line of each opcode -> instruction index: a branch target that is missing
    # here is either outside the program or an operand line.
    index_of_line: dict[int, int] = field(init=False, repr=False, compare=False)

    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lines = {ins.line: i for i, ins in enumerate(self.instructions)}
        object.__setattr__(self, "index_of_line", lines)
        # Cached: the batch executor looks programs up in a dict once per row.
        object.__setattr__(self, "_hash", hash((self.instructions, self.n_tokens)))

    def __hash__(self) -> int:
        return self._hash

    def text(self) -> str:
        """The canonical listing: one token per line, as in the paper."""
        tokens: list[str] = []
        for ins in self.instructions:
            tokens.append(ins.op)
            if ins.operand is not None:
                tokens.append(str(ins.operand))
        return "\n".join(tokens) + "\n"


class Outcome(NamedTuple):
    # A NamedTuple, not a dataclass: the batch executor builds one per row, and a tuple is
    # built in less than half the time. `outcome._asdict()` gives its JSON form.
    kind: OutcomeKind
    output: int | None  # the accumulator at HLT; None unless kind == "ok"
    steps: int  # instructions started (see the module docstring); 0 unless it ran
    error: str | None  # one-line reason; None when kind == "ok"


def count_tokens(text: str) -> int:
    return len(text.split())


def parse(text: str) -> Program:
    """Parse program text; raise LMCSyntaxError naming the first bad token line."""
    tokens = text.split()
    if not tokens:
        raise LMCSyntaxError("empty program")
    instructions: list[Instruction] = []
    i = 0
    while i < len(tokens):
        op, line = tokens[i], i + 1
        if op == "HLT":
            instructions.append(Instruction("HLT", None, line))
            i += 1
            continue
        if op not in OPERAND_OPS:
            if _INTEGER.fullmatch(op) and instructions and instructions[-1].op == "HLT":
                raise LMCSyntaxError(f"line {line}: HLT takes no operand, found {op}", line)
            raise LMCSyntaxError(f"line {line}: unknown opcode {op!r}", line)
        if i + 1 == len(tokens):
            raise LMCSyntaxError(f"line {line}: {op} is missing its operand", line)
        arg = tokens[i + 1]
        if arg in OPCODES:
            raise LMCSyntaxError(f"line {line}: {op} is missing its operand (found {arg})", line)
        if not _INTEGER.fullmatch(arg):
            message = f"line {line + 1}: {op} operand {arg!r} is not an integer"
            raise LMCSyntaxError(message, line + 1)
        value = int(arg)
        if not INT32_MIN <= value <= INT32_MAX:
            message = f"line {line + 1}: {op} operand {arg} is outside int32"
            raise LMCSyntaxError(message, line + 1)
        instructions.append(Instruction(op, value, line))
        i += 2
    return Program(tuple(instructions), len(tokens))


def wrap32(value: int) -> int:
    """Two's-complement int32 wrap-around."""
    return (value - INT32_MIN) % 2**32 + INT32_MIN


def check_inputs(inputs: Sequence[int]) -> None:
    """Inputs are the environment's, not the program's: bad ones raise BadInput."""
    if len(inputs) > MAX_INPUTS:
        raise BadInput(
            f"{len(inputs)} input values do not fit the machine: at most {MAX_INPUTS} "
            f"(the accumulator and {MEMORY_CELLS} memory cells)"
        )
    for value in inputs:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadInput(f"input value {value!r} is not an integer")
        if not INT32_MIN <= value <= INT32_MAX:
            raise BadInput(f"input value {value} is outside int32")


def check_t_max(t_max: int) -> None:
    if isinstance(t_max, bool) or not isinstance(t_max, int) or t_max < 0:
        raise BadInput(f"t_max must be a non-negative integer, got {t_max!r}")


# Runtime error messages, shared with the batch executor so that its outcomes are
# identical to the reference's, messages included.
def off_end_message() -> str:
    return "ran past the last line without reaching HLT"


def step_limit_message(t_max: int) -> str:
    return f"step limit: {t_max} instructions executed without reaching HLT"


def bad_address_message(ins: Instruction) -> str:
    return f"line {ins.line}: {ins.op} {ins.operand}: memory address outside 0..{MEMORY_CELLS - 1}"


def branch_outside_message(ins: Instruction, n_tokens: int) -> str:
    where = f"line {ins.line}: {ins.op} {ins.operand}"
    return f"{where}: target outside the program (lines 1..{n_tokens})"


def branch_operand_message(ins: Instruction) -> str:
    return f"line {ins.line}: {ins.op} {ins.operand}: target line holds an operand, not an opcode"


def truncation_message(n_tokens: int, max_len: int) -> str:
    return f"program has {n_tokens} tokens, more than the maximal length {max_len}"


def _runtime(message: str, steps: int) -> Outcome:
    return Outcome("runtime", None, steps, message)


def run(
    program: Program | str,
    inputs: Sequence[int],
    t_max: int = T_MAX,
    max_len: int | None = None,
) -> Outcome:
    """Run one program on one input list. Program errors are outcomes, not exceptions;
    inputs that do not fit the machine raise BadInput."""
    check_inputs(inputs)
    check_t_max(t_max)
    if max_len is not None:
        n_tokens = program.n_tokens if isinstance(program, Program) else count_tokens(program)
        if n_tokens > max_len:
            return Outcome("truncation", None, 0, truncation_message(n_tokens, max_len))
    if isinstance(program, str):
        try:
            program = parse(program)
        except LMCSyntaxError as error:
            return Outcome("syntax", None, 0, str(error))
    return _execute(program, inputs, t_max)


def _execute(program: Program, inputs: Sequence[int], t_max: int) -> Outcome:
    instructions = program.instructions
    index_of_line = program.index_of_line
    acc = inputs[0] if inputs else 0
    memory = list(inputs[1:]) + [0] * (MAX_INPUTS - max(len(inputs), 1))
    pc = 0
    steps = 0
    while True:
        if pc == len(instructions):
            return _runtime(off_end_message(), steps)
        if steps == t_max:
            return _runtime(step_limit_message(t_max), steps)
        ins = instructions[pc]
        steps += 1
        op = ins.op
        pc += 1
        if op == "HLT":
            return Outcome("ok", acc, steps, None)
        operand = ins.operand
        assert operand is not None  # parse gives every opcode but HLT an operand
        if op in MEMORY_OPS:
            if not 0 <= operand < MEMORY_CELLS:
                return _runtime(bad_address_message(ins), steps)
            if op == "ADD":
                acc = wrap32(acc + memory[operand])
            elif op == "SUB":
                acc = wrap32(acc - memory[operand])
            elif op == "LDA":
                acc = memory[operand]
            else:  # STA
                memory[operand] = acc
        elif op == "ADDL":
            acc = wrap32(acc + operand)
        elif op == "SUBL":
            acc = wrap32(acc - operand)
        elif op == "LDL":
            acc = operand
        elif op == "BRA" or (op == "BRZ" and acc == 0) or (op == "BRP" and acc > 0):
            target = index_of_line.get(operand)
            if target is None:
                if 1 <= operand <= program.n_tokens:
                    return _runtime(branch_operand_message(ins), steps)
                return _runtime(branch_outside_message(ins, program.n_tokens), steps)
            pc = target


def score_outcomes(outcomes: Sequence[Outcome], expected: Sequence[int]) -> float:
    """Section 2.1's reward from one program's outcomes on the test pairs, in order.

    The paper gives -1 to "programs that cannot be executed" and the fraction of correct
    outputs to programs that are "error-free", so one error on any pair makes the whole
    reward negative: truncation -2, syntax or runtime -1.
    """
    if not outcomes or len(outcomes) != len(expected):
        raise BadInput("a reward needs one outcome per expected output, and at least one")
    kinds = {outcome.kind for outcome in outcomes}
    if "truncation" in kinds:
        return -2.0
    if "syntax" in kinds or "runtime" in kinds:
        return -1.0
    correct = sum(o.output == want for o, want in zip(outcomes, expected, strict=True))
    return correct / len(outcomes)


def reward(
    program: str | Program,
    pairs: Sequence[tuple[Sequence[int], int]],
    max_len: int | None = None,
    t_max: int = T_MAX,
) -> float:
    """Section 2.1: -2 if the program has more than max_len tokens, -1 for a syntax error
    or a runtime error on any pair, else the fraction of pairs answered correctly."""
    if not pairs:
        raise BadInput("a reward needs at least one input/output pair")
    check_t_max(t_max)
    for inputs, _ in pairs:
        check_inputs(inputs)
    if max_len is not None:
        n_tokens = program.n_tokens if isinstance(program, Program) else count_tokens(program)
        if n_tokens > max_len:
            return -2.0
    if isinstance(program, str):
        try:
            program = parse(program)
        except LMCSyntaxError:
            return -1.0
    correct = 0
    for inputs, expected in pairs:
        outcome = _execute(program, inputs, t_max)
        if outcome.kind != "ok":
            return -1.0
        correct += outcome.output == expected
    return correct / len(pairs)
