"""Tests of the Little Man Computer: the reference machine (appendix A of the paper), the
reward (section 2.1), the task families (appendix B) and the batch executor, which must
agree with the reference on every outcome, errors included."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from stop.errors import BadInput, StopError
from stop.lmc import (
    LMCSyntaxError,
    Outcome,
    Task,
    add_tasks,
    parse,
    random_tasks,
    reward,
    run,
    run_batch,
    score_outcomes,
    task_by_name,
)
from stop.lmc.batch import prepare_and_execute
from stop.lmc.machine import INT32_MAX, INT32_MIN, OPCODES, OPERAND_OPS

EXAMPLE_1 = "LDL\n1\nSTA\n0\nLDL\n10\nSUB\n0\nBRP\n7\nHLT\n"  # the paper's listing
EXAMPLE_2 = "ADDL 1 BRZ 7 BRA 1 HLT"


def ok(output: int, steps: int) -> Outcome:
    return Outcome("ok", output, steps, None)


# --- the paper's examples -------------------------------------------------------------


def test_first_appendix_example_branches_to_the_sub_on_line_7():
    # 3 set-up instructions, 10 rounds of SUB and BRP, then HLT once the accumulator is 0.
    assert run(EXAMPLE_1, [0]) == ok(0, 3 + 2 * 10 + 1)
    assert run(" ".join(EXAMPLE_1.split()), [0]) == ok(0, 24)


def test_second_appendix_example_halts_only_on_negative_input():
    assert run(EXAMPLE_2, [-1]) == ok(0, 3)
    assert run(EXAMPLE_2, [-5]) == ok(0, 15)  # BRA 1 goes back to ADDL four times
    assert run(EXAMPLE_2, [-33]) == ok(0, 99)
    for start in (-34, 0, 3):  # loops past t_max = 100
        outcome = run(EXAMPLE_2, [start])
        assert (outcome.kind, outcome.steps) == ("runtime", 100)
        assert "step limit" in outcome.error


def test_addition_example():
    pairs = [([3, 5], 8), ([4, 8], 12), ([10, 1], 11)]
    assert [run("ADD\n0\nHLT", inputs).output for inputs, _ in pairs] == [8, 12, 11]
    assert reward("ADD 0 HLT", pairs) == 1.0


# --- every opcode -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("program", "inputs", "output"),
    [
        ("ADD 0 HLT", [3, 5], 8),
        ("SUB 1 HLT", [10, 0, 4], 6),
        ("ADDL 7 HLT", [1], 8),
        ("ADDL -3 HLT", [1], -2),
        ("SUBL 2 HLT", [1], -1),
        ("LDA 2 HLT", [0, 1, 2, 3], 3),
        ("LDA 0 HLT", [1, 2, 3], 2),  # the second input is in cell 0
        ("LDA 9 HLT", list(range(11)), 10),  # 11 inputs fill the accumulator and memory
        ("LDA 5 HLT", [1, 2], 0),  # cells not loaded hold 0
        ("LDL -42 HLT", [5], -42),
        ("LDL +7 HLT", [], 7),
        ("STA 9 LDL 0 ADD 9 ADD 9 HLT", [21], 42),
        ("BRA 5 LDL 1 HLT", [7], 7),  # line 5 is the HLT: LDL 1 is skipped
        ("BRZ 5 LDL 1 HLT", [0], 0),
        ("BRZ 5 LDL 1 HLT", [3], 1),
        ("BRZ 5 LDL 1 HLT", [-3], 1),
        ("BRP 5 LDL 1 HLT", [3], 3),
        ("BRP 5 LDL 1 HLT", [0], 1),  # positive means > 0
        ("BRP 5 LDL 1 HLT", [-2], 1),
        ("HLT", [4], 4),
        ("HLT", [], 0),
        ("BRZ 99 HLT", [1], 1),  # a bad target is only an error when the branch is taken
        ("BRA 5 LDA 99 HLT", [2], 2),  # a bad address is only an error when executed
    ],
)
def test_opcodes(program, inputs, output):
    outcome = run(program, inputs)
    assert (outcome.kind, outcome.output, outcome.error) == ("ok", output, None)


@pytest.mark.parametrize(
    ("program", "inputs", "output"),
    [
        ("ADDL 1 HLT", [INT32_MAX], INT32_MIN),
        ("SUBL 1 HLT", [INT32_MIN], INT32_MAX),
        ("SUB 0 HLT", [0, INT32_MIN], INT32_MIN),
        ("ADD 0 ADD 0 HLT", [INT32_MAX, INT32_MAX], INT32_MAX - 2),
        ("LDL -2147483648 SUBL 2147483647 HLT", [], 1),
    ],
)
def test_int32_arithmetic_wraps(program, inputs, output):
    assert run(program, inputs).output == output


def test_program_text_forms_agree():
    program = parse(EXAMPLE_1)
    assert program.n_tokens == 11
    assert parse("LDL 1   STA 0\n\n LDL 10 SUB\t0 BRP 7 HLT") == program
    assert parse(program.text()) == program
    assert program.text() == EXAMPLE_1
    assert len(program.instructions) == 6


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("program", "line", "words"),
    [
        ("FOO 1 HLT", 1, "unknown opcode"),
        ("ldl 1 HLT", 1, "unknown opcode"),  # opcodes are upper case, as in the paper
        ("LDL 1 HLT,", 3, "unknown opcode"),
        ("LDL 1 HLT 5", 4, "HLT takes no operand"),
        ("LDL", 1, "missing its operand"),
        ("LDL 1 ADD HLT", 3, "missing its operand"),
        ("LDL x HLT", 2, "not an integer"),
        ("LDL 1.5 HLT", 2, "not an integer"),
        ("BRA seven HLT", 2, "not an integer"),
        ("LDL 2147483648 HLT", 2, "outside int32"),
        ("", None, "empty program"),
    ],
)
def test_syntax_errors(program, line, words):
    with pytest.raises(LMCSyntaxError) as caught:
        parse(program)
    assert caught.value.line == line
    assert words in str(caught.value)
    assert isinstance(caught.value, BadInput) and isinstance(caught.value, StopError)
    outcome = run(program, [1])
    assert (outcome.kind, outcome.output, outcome.steps) == ("syntax", None, 0)
    assert outcome.error == str(caught.value)


@pytest.mark.parametrize(
    ("program", "inputs", "steps", "words"),
    [
        ("BRA 0", [], 1, "target outside the program (lines 1..2)"),
        ("BRA 99 HLT", [], 1, "target outside the program"),
        ("LDL 1 BRP -1 HLT", [], 2, "target outside the program"),
        ("BRA 2 HLT", [], 1, "target line holds an operand"),
        ("BRZ 4 HLT", [0], 1, "outside the program"),  # line 4 would be just past the end
        ("LDL 1 BRZ 1 BRP 4 HLT", [], 3, "line 5: BRP 4: target line holds an operand"),
        ("LDA 10 HLT", [], 1, "memory address outside 0..9"),
        ("STA -1 HLT", [], 1, "memory address outside 0..9"),
        ("LDL 3 ADD 10 HLT", [], 2, "line 3: ADD 10: memory address"),
        ("SUB 12 HLT", [], 1, "memory address"),
        ("LDL 1", [], 1, "ran past the last line"),
        ("BRZ 1", [5], 1, "ran past the last line"),
        ("BRA 1", [], 100, "step limit"),
    ],
)
def test_runtime_errors(program, inputs, steps, words):
    outcome = run(program, inputs)
    assert (outcome.kind, outcome.output, outcome.steps) == ("runtime", None, steps)
    assert words in outcome.error


def test_step_limit_counts_instructions_including_hlt():
    assert run(EXAMPLE_2, [-1], t_max=3) == ok(0, 3)
    assert run(EXAMPLE_2, [-1], t_max=2).kind == "runtime"
    assert run("HLT", [], t_max=0).error.startswith("step limit")
    # Running off the end is no attempt to execute: it wins over the step limit.
    assert "ran past" in run("LDL 1", [], t_max=1).error


def test_truncation():
    assert run("LDL 1 HLT", [], max_len=3) == ok(1, 2)
    outcome = run("LDL 1 HLT", [], max_len=2)
    assert (outcome.kind, outcome.steps) == ("truncation", 0)
    assert run(parse("LDL 1 HLT"), [], max_len=2).kind == "truncation"
    assert run("FOO FOO FOO", [], max_len=2).kind == "truncation"  # checked before syntax


@pytest.mark.parametrize(
    "inputs", [list(range(12)), ["3"], [1.0], [True], [INT32_MAX + 1], [INT32_MIN - 1]]
)
def test_inputs_that_do_not_fit_the_machine_raise(inputs):
    with pytest.raises(BadInput):
        run("HLT", inputs)
    with pytest.raises(BadInput):
        run_batch(["HLT"], [inputs])


def test_bad_t_max_raises():
    with pytest.raises(BadInput):
        run("HLT", [], t_max=-1)
    with pytest.raises(BadInput):
        run_batch(["HLT"], [[]], t_max=-1)


# --- reward --------------------------------------------------------------------------


def test_reward():
    pairs = [([3, 5], 8), ([4, 8], 12), ([10, 1], 99)]
    assert reward("ADD 0 HLT", pairs) == pytest.approx(2 / 3)
    assert reward("LDL 0 HLT", pairs) == 0.0
    assert reward("ADD 0 HLT", pairs, max_len=3) == pytest.approx(2 / 3)
    assert reward("ADD 0 HLT", pairs, max_len=2) == -2.0
    assert reward("ADD x HLT", pairs) == -1.0
    assert reward("BRA 1", pairs) == -1.0
    # One runtime error on any pair makes the whole program "not error-free": -1.
    assert reward("SUBL 4 BRZ 99 ADD 0 HLT", pairs) == -1.0
    assert reward("SUBL 4 BRZ 99 ADD 0 HLT", pairs[:1]) == 0.0  # 3 - 4 + 5 = 4, not 8
    with pytest.raises(BadInput):
        reward("HLT", [])


def test_score_outcomes_agrees_with_reward():
    pairs = [([3, 5], 8), ([4, 8], 12), ([0, 1], 1), ([10, 1], 99)]
    for program in ["ADD 0 HLT", "SUBL 4 BRZ 99 ADD 0 HLT", "ADD", "BRA 1", "LDA 0 HLT"]:
        for max_len in (None, 3):
            outcomes = run_batch([program] * 4, [x for x, _ in pairs], max_len=max_len)
            expected = [y for _, y in pairs]
            assert score_outcomes(outcomes, expected) == reward(program, pairs, max_len)


# --- task families -----------------------------------------------------------------------


def test_add_family():
    tasks = add_tasks(6)
    assert [task.name for task in tasks] == ["add-2", "add-3", "add-4", "add-5", "add-6"]
    for k, task in enumerate(tasks, start=2):
        assert (task.family, task.input_length, task.program) == ("add", k, None)
        assert len(task.train) == len(task.test) == 3
        for inputs, output in task.train + task.test:
            assert len(inputs) == k and output == sum(inputs)
            assert all(1 <= value <= 99 for value in inputs)
    assert add_tasks(6) == tasks
    assert add_tasks(4) == tasks[:3]  # a task does not depend on the list it is in
    assert add_tasks(6, seed=1) != tasks
    assert add_tasks(6, seed=1)[0].name == "add-2-1"
    assert reward("ADD 0 HLT", tasks[0].test) == 1.0
    assert reward("ADD 0 ADD 1 ADD 2 HLT", tasks[2].test) == 1.0
    with pytest.raises(BadInput):
        add_tasks(12)


def test_random_family_follows_appendix_b():
    tasks = random_tasks(40, seed=0)
    assert random_tasks(40, seed=0) == tasks
    assert random_tasks(10, seed=0) == tasks[:10]
    assert random_tasks(10, seed=1) != tasks[:10]
    lengths = set()
    for index, task in enumerate(tasks):
        n = task.input_length
        lengths.add(n)
        assert task.name == f"random-0-{index}" and task.family == "random"
        assert 2 <= n <= 8 and len(task.train) == len(task.test) == 4
        for inputs, _ in task.train + task.test:
            assert len(inputs) == n and all(1 <= v <= 10 for v in inputs)
        tokens = task.program.split()
        opcodes, operands = tokens[:-1:2], tokens[1:-1:2]
        assert tokens[-1] == "HLT" and len(opcodes) >= n - 1
        assert all(op in OPERAND_OPS for op in opcodes)
        assert all(0 <= int(arg) <= n - 2 for arg in operands)
        # The program really produces the outputs, on both splits.
        assert reward(task.program, task.train) == 1.0
        assert reward(task.program, task.test) == 1.0
    assert len(lengths) > 3


def test_random_family_parameters():
    task = random_tasks(1, seed=3, n_max=3, x_max=100)[0]
    assert task.name == "random-3-0-n3-x100" and task.value_range == (1, 100)
    assert task_by_name(task.name) == task
    with pytest.raises(BadInput):
        random_tasks(1, n_max=1)
    with pytest.raises(BadInput):
        random_tasks(-1)


def test_task_records_round_trip_and_forbid_extra_fields():
    for task in add_tasks(3) + random_tasks(3):
        assert Task.model_validate_json(task.model_dump_json()) == task
        assert task_by_name(task.name) == task
    data = add_tasks(2)[0].model_dump()
    with pytest.raises(ValidationError):
        Task.model_validate({**data, "surprise": 1})


def test_task_by_name():
    assert task_by_name("add-4") == add_tasks(4)[2]
    assert task_by_name("add-4-7") == add_tasks(4, seed=7)[2]
    assert task_by_name("random-0-5") == random_tasks(6)[5]


@pytest.mark.parametrize(
    "name", ["add-1", "add-12", "add-04", "mul-3", "random-1", "random-x-1", "", "ADD-4"]
)
def test_task_by_name_rejects_unknown_names(name):
    with pytest.raises(BadInput) as caught:
        task_by_name(name)
    message = str(caught.value)
    assert "\n" not in message and repr(name) in message
    assert "add-K" in message and "random-SEED-INDEX" in message


# --- the batch executor ------------------------------------------------------------------


def test_batch_matches_reference_on_the_examples_and_errors():
    programs = [EXAMPLE_1, EXAMPLE_2, EXAMPLE_2, "ADD 0 HLT", "FOO", "BRA 2 HLT", "LDL 1"]
    programs += ["LDA 10 HLT", "BRA 0", "LDL 1 HLT HLT", parse(EXAMPLE_2), "LDL 2 HLT"]
    inputs = [[0], [-5], [7], [3, 5], [], [], [], [], [], [1], [-33], [4]]
    expected = [run(p, x, max_len=5) for p, x in zip(programs, inputs, strict=True)]
    assert run_batch(programs, inputs, max_len=5) == expected
    assert {outcome.kind for outcome in expected} == {"ok", "syntax", "runtime", "truncation"}
    assert run_batch([], []) == []
    assert run_batch(["BRA 1", "HLT"], [[], []], t_max=0) == [
        run("BRA 1", [], t_max=0),
        run("HLT", [], t_max=0),
    ]
    with pytest.raises(BadInput):
        run_batch(["HLT"], [[], []])


def test_batch_result_arrays():
    result = prepare_and_execute(["ADD 0 HLT", "BRA 1", "FOO"], [[3, 5], [], []])
    assert result.code.tolist()[0] == 0 and result.output.tolist()[0] == 8
    assert [outcome.kind for outcome in result.outcomes()] == ["ok", "runtime", "syntax"]


def _random_program(rng: random.Random) -> str:
    """Mostly well-formed programs with small operands, so that branches often land on
    real lines and loops happen; now and then a junk token."""
    n = rng.randint(1, 10)
    tokens: list[str] = []
    for _ in range(n):
        op = rng.choice(OPCODES)
        tokens.append(op)
        if op != "HLT":
            tokens.append(str(rng.randint(-1, 2 * n + 1)))
    if rng.random() < 0.05:
        tokens.insert(rng.randrange(len(tokens) + 1), rng.choice(["FOO", "1", "x", "HLT"]))
    return " ".join(tokens)


def _random_inputs(rng: random.Random) -> list[int]:
    values = [-2, -1, 0, 1, 2, 3, 50, INT32_MAX, INT32_MIN, INT32_MAX - 1]
    return [rng.choice(values) for _ in range(rng.randint(0, 11))]


def test_batch_matches_reference_on_many_random_programs():
    # One large batch: many distinct programs, parked rows, compaction.
    rng = random.Random(7)
    programs = [_random_program(rng) for _ in range(400)]
    rows = [(p, _random_inputs(rng)) for p in programs for _ in range(5)]
    programs_, inputs = [p for p, _ in rows], [x for _, x in rows]
    expected = [run(p, x, t_max=60) for p, x in rows]
    assert run_batch(programs_, inputs, t_max=60) == expected
    assert {o.kind for o in expected} == {"ok", "syntax", "runtime"}
    errors = " ".join(o.error for o in expected if o.kind == "runtime")
    for words in ("outside the program", "holds an operand", "memory address", "ran past"):
        assert words in errors
    assert "step limit" in errors


# Operands mostly valid addresses and early opcode lines, so that loops happen.
_operand = st.one_of(st.integers(0, 9), st.sampled_from([1, 3, 5]), st.integers(-2, 24))
_instruction = st.tuples(st.sampled_from(OPCODES), _operand)
_value = st.one_of(st.integers(-3, 60), st.sampled_from([INT32_MAX, INT32_MIN, INT32_MAX - 1]))


@st.composite
def _program_text(draw) -> str:
    tokens: list[str] = []
    for op, operand in draw(st.lists(_instruction, min_size=1, max_size=10)):
        tokens += [op] if op == "HLT" else [op, str(operand)]
    if draw(st.integers(0, 19)) == 0:  # now and then a syntax error
        where = draw(st.integers(0, len(tokens)))
        tokens.insert(where, draw(st.sampled_from(["FOO", "7", "1.5", "ADD", "HLT"])))
    return draw(st.sampled_from([" ", "\n"])).join(tokens)


@settings(max_examples=150, deadline=None)
@given(
    batch=st.lists(
        st.tuples(_program_text(), st.lists(st.lists(_value, max_size=11), min_size=1, max_size=4)),
        min_size=1,
        max_size=6,
    ),
    t_max=st.one_of(st.just(100), st.integers(0, 30)),
    max_len=st.one_of(st.none(), st.integers(1, 20)),
)
def test_batch_executor_matches_reference(batch, t_max, max_len):
    programs = [program for program, inputs in batch for _ in inputs]
    inputs = [values for _, lists in batch for values in lists]
    expected = [run(p, x, t_max, max_len) for p, x in zip(programs, inputs, strict=True)]
    assert run_batch(programs, inputs, t_max, max_len) == expected
