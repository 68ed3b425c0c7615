"""A batch executor: many (program, input) pairs at once, outcomes identical to the
reference interpreter's (`stop.lmc.machine.run`), error messages and step counts included.

Why numpy: it is already a dependency, needs no compiler, and the LMC maps well onto it.
numba would be faster per step but is not installed and is a heavy compiled dependency;
numpy meets the issue's 10x goal (benchmarks/bench_lmc.py: a step costs about 20 ns per
row here, against roughly 0.3-0.7 us in the reference).

Every distinct program is compiled into one shared table of micro-operations. A row's
state is its position in that table, its accumulator and 12 int32 cells (10 of memory, a
constant 0 that literal instructions read, a scratch cell), so one machine step for the
whole batch is a few gathers and element-wise operations, with no branching per opcode:

    value = memory[row, read_cell[pos]] + literal[pos]
    acc   = acc * keep[pos] + sign[pos] * value      # ADD SUB LDA ADDL SUBL LDL; others no-op
    memory[row, write_cell[pos]] = acc               # rows at an STA only
    pos   = next_pos[pos + sign(acc)]                # branches resolved at compile time

Memory addresses and branch targets are checked once, when compiling: an instruction
with a bad address becomes an error entry, and a branch with a bad target jumps to an
error entry that reports it. HLT, the end of a program and the error entries sit after
all runnable entries, so `pos.max()` tells whether any row stops this step. Rows that
stop are parked on a no-op entry and compacted away once they are the majority. numpy's
int32 arithmetic wraps modulo 2**32, which is the reference's overflow rule.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from stop.errors import BadInput
from stop.lmc.machine import (
    BRANCH_OPS,
    INT32_MAX,
    INT32_MIN,
    MAX_INPUTS,
    MEMORY_CELLS,
    MEMORY_OPS,
    T_MAX,
    LMCSyntaxError,
    Outcome,
    OutcomeKind,
    Program,
    bad_address_message,
    branch_operand_message,
    branch_outside_message,
    check_inputs,
    check_t_max,
    count_tokens,
    off_end_message,
    parse,
    step_limit_message,
    truncation_message,
)

_ZERO_CELL = MEMORY_CELLS  # always 0: the "memory" operand of literal instructions
_SCRATCH_CELL = MEMORY_CELLS + 1  # the write cell of every instruction that is not STA
_CELLS = MEMORY_CELLS + 2
_SINK = 0  # table entry every finished row is parked on: a no-op that loops on itself

# What an entry of the table does. Entries of every kind but _RUN stop the row; they sit
# after all runnable entries, so one comparison with a threshold finds stopping rows.
_RUN, _HALT, _OFF_END, _BAD_ADDRESS, _BRANCH_OUTSIDE, _BRANCH_OPERAND = range(6)

# Result codes, one per row.
OK, SYNTAX, TRUNCATION, OFF_END, STEP_LIMIT, BAD_ADDRESS, BRANCH_OUTSIDE, BRANCH_OPERAND = range(8)
_KIND_OF_CODE: tuple[OutcomeKind, ...] = ("ok", "syntax", "truncation") + ("runtime",) * 5
_CODE_OF_ACTION = np.array([OK, OK, OFF_END, BAD_ADDRESS, BRANCH_OUTSIDE, BRANCH_OPERAND], np.uint8)
# Steps credited to a row that stops at an entry: HLT and a bad address count themselves;
# the end and a branch sink are reached after the last instruction that started.
_STEP_OF_ACTION = np.array([0, 1, 0, 1, 0, 0], np.int64)

_ARITHMETIC = {  # op -> (keep the accumulator, sign of the operand value)
    "ADD": (1, 1),
    "SUB": (1, -1),
    "LDA": (0, 1),
    "ADDL": (1, 1),
    "SUBL": (1, -1),
    "LDL": (0, 1),
}
_TAKEN = {"BRA": (0, 1, 2), "BRZ": (1,), "BRP": (2,)}  # accumulator < 0, == 0, > 0


def _pos(flat: int) -> int:
    # A row's state is the position 3 * entry + 1, so that the next position is a single
    # lookup at position + sign(accumulator).
    return 3 * flat + 1


@dataclass(frozen=True, eq=False)  # numpy fields: compare by identity
class Compiled:
    """Programs compiled into one table of micro-operations (see the module docstring)."""

    programs: tuple[Program, ...]
    entry: np.ndarray  # int64 [P]: position of each program's first instruction
    stop_from: int  # positions >= this one stop the row
    action: np.ndarray  # uint8 [F], by entry
    origin: list[tuple[int, int]]  # [F]: (program, instruction) an entry reports errors for
    # The rest is indexed by position (3F long; an entry's values repeat three times).
    read_cell: np.ndarray  # int64
    literal: np.ndarray  # int32
    keep: np.ndarray  # int32
    sign: np.ndarray  # int32
    write_cell: np.ndarray  # int64
    is_store: np.ndarray  # bool
    next_pos: np.ndarray  # int64


def compile_programs(programs: Sequence[Program]) -> Compiled:
    runnable: list[tuple[int, int]] = []  # (program, instruction)
    stops: list[tuple[int, int, int]] = []  # (action, program, instruction)
    sink_of: dict[tuple[int, int], int] = {}  # failing branch -> its stop number
    for p, program in enumerate(programs):
        for i, ins in enumerate(program.instructions):
            if ins.op == "HLT":
                stops.append((_HALT, p, i))
            elif ins.op in MEMORY_OPS and not 0 <= cast(int, ins.operand) < MEMORY_CELLS:
                stops.append((_BAD_ADDRESS, p, i))
            else:
                runnable.append((p, i))
        stops.append((_OFF_END, p, len(program.instructions)))
    for p, i in runnable:
        program = programs[p]
        ins = program.instructions[i]
        if ins.op in BRANCH_OPS and ins.operand not in program.index_of_line:
            inside = 1 <= cast(int, ins.operand) <= program.n_tokens  # not HLT: an operand
            sink_of[p, i] = len(stops)
            stops.append((_BRANCH_OPERAND if inside else _BRANCH_OUTSIDE, p, i))
    first_stop = 1 + len(runnable)
    size = first_stop + len(stops)
    at: dict[tuple[int, int], int] = {key: 1 + k for k, key in enumerate(runnable)}
    for k, (kind, p, i) in enumerate(stops):
        if kind in (_HALT, _BAD_ADDRESS, _OFF_END):
            at[p, i] = first_stop + k

    action = np.zeros(size, np.uint8)
    origin = [(-1, -1)] * size
    read = np.full(size, _ZERO_CELL, np.int64)
    literal = np.zeros(size, np.int32)
    keep = np.ones(size, np.int32)
    sign = np.zeros(size, np.int32)
    write = np.full(size, _SCRATCH_CELL, np.int64)
    next_pos = np.full(3 * size, _pos(_SINK), np.int64)
    for k, (kind, p, i) in enumerate(stops):
        action[first_stop + k] = kind
        origin[first_stop + k] = (p, i)
    for f, (p, i) in enumerate(runnable, start=1):
        program = programs[p]
        # Runnable instructions are not HLT: each has an operand.
        op, arg = program.instructions[i].op, cast(int, program.instructions[i].operand)
        origin[f] = (p, i)
        next_pos[3 * f : 3 * f + 3] = _pos(at[p, i + 1])
        if op == "STA":
            write[f] = arg
        elif op in _ARITHMETIC:
            keep[f], sign[f] = _ARITHMETIC[op]
            if op in MEMORY_OPS:
                read[f] = arg
            else:
                literal[f] = arg
        else:
            target = program.index_of_line.get(arg)
            goal = first_stop + sink_of[p, i] if target is None else at[p, target]
            for slot in _TAKEN[op]:
                next_pos[3 * f + slot] = _pos(goal)
    return Compiled(
        programs=tuple(programs),
        entry=np.array([_pos(at[p, 0]) for p in range(len(programs))], np.int64),
        stop_from=_pos(first_stop) - 1,
        action=action,
        origin=origin,
        read_cell=np.repeat(read, 3),
        literal=np.repeat(literal, 3),
        keep=np.repeat(keep, 3),
        sign=np.repeat(sign, 3),
        write_cell=np.repeat(write, 3),
        is_store=np.repeat(write != _SCRATCH_CELL, 3),
        next_pos=next_pos,
    )


@dataclass(eq=False)
class BatchResult:
    """Per-row results as arrays; `outcomes()` turns them into reference Outcomes."""

    code: np.ndarray  # uint8 [B]: OK, SYNTAX, ... (module constants)
    output: np.ndarray  # int64 [B]: the accumulator at HLT, 0 unless OK
    steps: np.ndarray  # int64 [B]
    where: np.ndarray  # int64 [B]: table entry an error is reported from, else -1
    compiled: Compiled
    t_max: int
    messages: dict[int, str]  # row -> message, for SYNTAX and TRUNCATION rows

    def outcomes(self) -> list[Outcome]:
        codes, outputs, steps = self.code.tolist(), self.output.tolist(), self.steps.tolist()
        new = tuple.__new__  # Outcome(...) without the keyword handling: 2x faster per row
        return [
            new(Outcome, ("ok", out, n, None)) if code == OK else self._failure(row, code, n)
            for row, (code, out, n) in enumerate(zip(codes, outputs, steps, strict=True))
        ]

    def _failure(self, row: int, code: int, steps: int) -> Outcome:
        if code in (SYNTAX, TRUNCATION):
            return Outcome(_KIND_OF_CODE[code], None, 0, self.messages[row])
        if code == OFF_END:
            return Outcome("runtime", None, steps, off_end_message())
        if code == STEP_LIMIT:
            return Outcome("runtime", None, steps, step_limit_message(self.t_max))
        p, i = self.compiled.origin[int(self.where[row])]
        program = self.compiled.programs[p]
        ins = program.instructions[i]
        if code == BAD_ADDRESS:
            message = bad_address_message(ins)
        elif code == BRANCH_OUTSIDE:
            message = branch_outside_message(ins, program.n_tokens)
        else:
            message = branch_operand_message(ins)
        return Outcome("runtime", None, steps, message)


def execute(
    compiled: Compiled,
    program_index: np.ndarray,
    inputs: np.ndarray,
    t_max: int = T_MAX,
) -> BatchResult:
    """Run row r: program `program_index[r]` on `inputs[r]` (int32-valued [B, k <= 11],
    zero-padded: an unloaded cell is 0 either way)."""
    check_t_max(t_max)
    n_rows = len(program_index)
    inputs = np.asarray(inputs)
    if inputs.ndim != 2 or inputs.shape[0] != n_rows or inputs.shape[1] > MAX_INPUTS:
        raise BadInput(f"inputs must be an array [rows, <= {MAX_INPUTS}], got {inputs.shape}")
    if inputs.size and (inputs.min() < INT32_MIN or inputs.max() > INT32_MAX):
        raise BadInput("input values must lie within int32")
    code = np.full(n_rows, OK, np.uint8)
    output = np.zeros(n_rows, np.int64)
    steps = np.zeros(n_rows, np.int64)
    where = np.full(n_rows, -1, np.int64)

    c = compiled
    rows = np.arange(n_rows)
    pos = c.entry[np.asarray(program_index, dtype=np.int64)]
    memory = np.zeros((n_rows, _CELLS), np.int32)
    width = inputs.shape[1]
    acc = inputs[:, 0].astype(np.int32) if width else np.zeros(n_rows, np.int32)
    memory[:, : max(width - 1, 0)] = inputs[:, 1:]
    flat = memory.reshape(-1)
    row_base = np.arange(n_rows, dtype=np.int64) * _CELLS
    active = n_rows
    parked = _pos(_SINK)

    for t in range(t_max + 1):
        if active == 0:
            break
        if t == t_max:  # whoever still runs stops now; only failures already met come first
            late = np.flatnonzero(pos != parked)
            entry = pos[late] // 3
            act = c.action[entry]
            met = (act == _OFF_END) | (act == _BRANCH_OUTSIDE) | (act == _BRANCH_OPERAND)
            done = rows[late]
            code[done] = np.where(met, _CODE_OF_ACTION[act], STEP_LIMIT)
            steps[done] = t
            where[done] = np.where(met & (act >= _BAD_ADDRESS), entry, -1)
            break
        if pos.max() >= c.stop_from:
            stopping = np.flatnonzero(pos >= c.stop_from)
            entry = pos[stopping] // 3
            act = c.action[entry]
            done = rows[stopping]
            code[done] = _CODE_OF_ACTION[act]
            steps[done] = t + _STEP_OF_ACTION[act]
            halted = act == _HALT
            output[done[halted]] = acc[stopping[halted]]
            where[done] = np.where(act >= _BAD_ADDRESS, entry, -1)
            pos[stopping] = parked
            active -= len(stopping)
            if active == 0:
                break
            if active * 2 < len(pos):  # parked rows are the majority: drop them
                keep = np.flatnonzero(pos != parked)
                pos, acc, rows = pos[keep], acc[keep], rows[keep]
                memory = memory[keep]
                flat = memory.reshape(-1)
                row_base = np.arange(len(keep), dtype=np.int64) * _CELLS
        value = flat[row_base + c.read_cell[pos]]
        value += c.literal[pos]
        acc = acc * c.keep[pos] + c.sign[pos] * value  # int32: wraps modulo 2**32
        stores = np.flatnonzero(c.is_store[pos])  # STA is rare: scatter only its rows
        if len(stores):
            flat[row_base[stores] + c.write_cell[pos[stores]]] = acc[stores]
        pos = c.next_pos[pos + np.sign(acc)]
    return BatchResult(code, output, steps, where, compiled, t_max, {})


def run_batch(
    programs: Sequence[Program | str],
    inputs: Sequence[Sequence[int]],
    t_max: int = T_MAX,
    max_len: int | None = None,
) -> list[Outcome]:
    """Outcome of programs[i] on inputs[i] for every i, as `machine.run` would give it."""
    return prepare_and_execute(programs, inputs, t_max, max_len).outcomes()


def prepare_and_execute(
    programs: Sequence[Program | str],
    inputs: Sequence[Sequence[int]],
    t_max: int = T_MAX,
    max_len: int | None = None,
) -> BatchResult:
    """Parse and compile each distinct program once, run every row, keep the results as
    arrays (cheaper than Outcomes when only codes and outputs are needed)."""
    if len(programs) != len(inputs):
        raise BadInput(f"{len(programs)} programs but {len(inputs)} input lists")
    check_t_max(t_max)
    n_rows = len(programs)
    table = input_table(inputs)
    # A distinct program text or object is parsed and compiled once for all its rows.
    slot: dict[Program | str, int] = {}  # program -> compiled number, or -1 - failure number
    compiled_list: list[Program] = []
    failures: list[tuple[int, str]] = []  # (code, message)
    slots = []
    for program in programs:
        known = slot.get(program)
        if known is None:
            prepared = _prepare(program, max_len)
            if isinstance(prepared, Program):
                known = slot[program] = len(compiled_list)
                compiled_list.append(prepared)
            else:
                known = slot[program] = -1 - len(failures)
                failures.append(prepared)
        slots.append(known)
    program_index = np.array(slots, dtype=np.int64)
    failed = {row: failures[-1 - k] for row, k in enumerate(slots) if k < 0} if failures else {}

    compiled = compile_programs(compiled_list)
    if not failed:
        return execute(compiled, program_index, table, t_max)
    sub = np.setdiff1d(np.arange(n_rows), np.fromiter(failed, np.int64, len(failed)))
    part = execute(compiled, program_index[sub], table[sub], t_max)
    code = np.zeros(n_rows, np.uint8)
    output = np.zeros(n_rows, np.int64)
    steps = np.zeros(n_rows, np.int64)
    where = np.full(n_rows, -1, np.int64)
    code[sub], output[sub], steps[sub], where[sub] = part.code, part.output, part.steps, part.where
    for row, (failed_code, _) in failed.items():
        code[row] = failed_code
    messages = {row: message for row, (_, message) in failed.items()}
    return BatchResult(code, output, steps, where, compiled, t_max, messages)


def input_table(inputs: Sequence[Sequence[int]]) -> np.ndarray:
    """Input lists as a zero-padded int64 array [rows, 11]; bad ones raise BadInput with the
    reference's message."""
    lengths = [len(values) for values in inputs]
    flat_values = list(itertools.chain.from_iterable(inputs))
    try:
        if max(lengths, default=0) > MAX_INPUTS or any(type(v) is not int for v in flat_values):
            raise OverflowError  # not the fast case: let the reference's check decide
        array = np.array(flat_values, dtype=np.int64)
        if array.size and (array.min() < INT32_MIN or array.max() > INT32_MAX):
            raise OverflowError
    except OverflowError:
        for values in inputs:
            check_inputs(values)
        array = np.array(flat_values, dtype=np.int64)  # int subclasses the check allows
    table = np.zeros((len(inputs), MAX_INPUTS), np.int64)
    counts = np.array(lengths, dtype=np.int64)
    rows = np.repeat(np.arange(len(inputs)), counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    table[rows, np.arange(len(array)) - starts] = array
    return table


def _prepare(program: Program | str, max_len: int | None) -> Program | tuple[int, str]:
    """The parsed program, or its truncation or syntax failure as `machine.run` reports it."""
    if max_len is not None:
        n_tokens = program.n_tokens if isinstance(program, Program) else count_tokens(program)
        if n_tokens > max_len:
            return TRUNCATION, truncation_message(n_tokens, max_len)
    if isinstance(program, Program):
        return program
    try:
        return parse(program)
    except LMCSyntaxError as error:
        return SYNTAX, str(error)
