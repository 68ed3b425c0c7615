"""Byte-level tokens, the sequence format of section 2.2, and the code-unit vocabulary.

A trajectory is the task's training pairs as a prompt, then one step per code unit:

    inputs=[[0, 1], [4, 6]]outputs=[1, 10]
    O:9 A:ADD O:9 A:0 O:9 A:HLT

Every byte is a token (UTF-8, as ByT5). Each step is `O:<outcome> A:<unit> `: the outcome
character is the trajectory's final outcome (the value head's target) and the unit is
followed by one space, which ends it and makes the units prefix-free ("ADD " is not a
prefix of "ADDL "), so equation 1 can sum over a unit's bytes without ambiguity.

Outcome characters: the digit round(9 * fraction of test pairs correct), rounding half up
(with 3 test pairs: 0, 3, 6, 9), or T / S / R for truncation, syntax and runtime errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from stop.errors import BadInput
from stop.lmc.machine import OPCODES, OPERAND_OPS
from stop.lmc.tasks import Task

VOCAB = 256  # one token per byte
PAD = 0  # a NUL byte never occurs in the format; padded positions are masked anyway
OUTCOME_CHARS = "0123456789TSR"
OUTCOME_VALUE = {**{str(d): d / 9 for d in range(10)}, "T": -2.0, "S": -1.0, "R": -1.0}
BEST_OUTCOME = "9"

# Byte roles inside a sequence: which targets the loss sees.
ROLE_PROMPT, ROLE_FRAME, ROLE_OUTCOME, ROLE_ACTION = range(4)


def encode(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def prompt_text(task: Task) -> str:
    inputs = [list(values) for values, _ in task.train]
    outputs = [output for _, output in task.train]
    return f"inputs={inputs}outputs={outputs}\n"


def outcome_char(kind: str, fraction: float | None) -> str:
    """The outcome character of a finished program (kind as in `Outcome.kind`)."""
    if kind == "truncation":
        return "T"
    if kind == "syntax":
        return "S"
    if kind == "runtime":
        return "R"
    if fraction is None or not 0 <= fraction <= 1:
        raise BadInput(f"an ok outcome needs a fraction in 0..1, got {fraction!r}")
    return str(math.floor(9 * fraction + 0.5))


def outcome_of_reward(reward: float) -> str:
    """Outcome character from section 2.1's reward (-2, -1 or a fraction)."""
    if reward <= -2:
        return "T"
    if reward < 0:
        return "R"  # the reward does not tell syntax from runtime errors; both are -1
    return outcome_char("ok", reward)


def step_head(outcome: str) -> str:
    return f"O:{outcome} A:"


def encode_trajectory(
    task: Task, units: tuple[str, ...] | list[str], outcome: str
) -> tuple[list[int], list[int]]:
    """Token ids and the role of each token for a (possibly unfinished) trajectory."""
    ids = encode(prompt_text(task))
    roles = [ROLE_PROMPT] * len(ids)
    for unit in units:
        for part, role in (
            ("O:", ROLE_FRAME),
            (outcome, ROLE_OUTCOME),
            (" A:", ROLE_FRAME),
            (unit + " ", ROLE_ACTION),
        ):
            piece = encode(part)
            ids += piece
            roles += [role] * len(piece)
    return ids, roles


def loss_mask(roles: list[int], train_policy: bool, train_value: bool) -> list[float]:
    """Weight of each *target* token (the token predicted at the previous position).

    The prompt (the I/O examples) never gets a loss. Policy sequences train the action
    bytes, value sequences the outcome characters (section 2.4.2: separate buffers)."""
    wanted = set()
    if train_policy:
        wanted.add(ROLE_ACTION)
    if train_value:
        wanted.add(ROLE_OUTCOME)
    return [1.0 if role in wanted else 0.0 for role in roles]


@dataclass(frozen=True)
class Trie:
    """The proper prefixes of some units' bytes: one query each in the policy forward."""

    units: tuple[int, ...]  # unit indices covered, in order
    node_bytes: list[int]  # the last byte of each node
    node_depth: list[int]  # 0 for a one-byte prefix
    ancestors: np.ndarray  # [N, N] bool: node i may attend to node j (itself included)
    path_src: np.ndarray  # [U, L] 0: the context's last position, 1 + i: node i
    path_byte: np.ndarray  # [U, L] the byte scored there
    path_valid: np.ndarray  # [U, L]


def build_trie(unit_indices: tuple[int, ...], encoded: list[list[int]]) -> Trie:
    prefixes: dict[tuple[int, ...], int] = {}
    for i in unit_indices:
        code = encoded[i]
        for end in range(1, len(code)):  # proper, non-empty prefixes
            prefixes.setdefault(tuple(code[:end]), len(prefixes))
    nodes = list(prefixes)
    ancestors = np.zeros((len(nodes), len(nodes)), bool)
    for i, node in enumerate(nodes):
        for end in range(1, len(node) + 1):
            ancestors[i, prefixes[node[:end]]] = True
    width = max(len(encoded[i]) for i in unit_indices)
    path_src = np.zeros((len(unit_indices), width), np.int64)
    path_byte = np.zeros((len(unit_indices), width), np.int64)
    path_valid = np.zeros((len(unit_indices), width), bool)
    for row, i in enumerate(unit_indices):
        for k, byte in enumerate(encoded[i]):
            path_src[row, k] = 0 if k == 0 else 1 + prefixes[tuple(encoded[i][:k])]
            path_byte[row, k] = byte
            path_valid[row, k] = True
    return Trie(
        tuple(unit_indices),
        [n[-1] for n in nodes],
        [len(n) - 1 for n in nodes],
        ancestors,
        path_src,
        path_byte,
        path_valid,
    )


@dataclass
class Units:
    """The allowed code units: the 11 opcodes and the operands 0..n_operands-1 (memory
    cells, literals and branch targets alike), with byte tries over them so that equation 1
    for every unit is one batched forward."""

    n_operands: int = 10
    units: list[str] = field(init=False)
    n_opcodes: int = field(init=False)
    encoded: list[list[int]] = field(init=False)

    def __post_init__(self) -> None:
        if not 1 <= self.n_operands <= 100:
            raise BadInput(f"n_operands must be in 1..100, got {self.n_operands}")
        self.units = [*OPCODES, *(str(i) for i in range(self.n_operands))]
        self.n_opcodes = len(OPCODES)
        self.encoded = [encode(unit + " ") for unit in self.units]

    @property
    def size(self) -> int:
        return len(self.units)

    def index(self, unit: str) -> int:
        return self.units.index(unit)

    def trie(self, unit_indices: tuple[int, ...] | None = None) -> Trie:
        return build_trie(unit_indices or tuple(range(self.size)), self.encoded)

    def allowed(
        self, programs: list[list[str]] | list[tuple[str, ...]], grammar: bool
    ) -> np.ndarray:
        """[B, C] bool. With `grammar`, an operand follows each opcode that takes one and
        an opcode follows everything else (the ISA's alternation); without it every unit
        is allowed everywhere, as in the paper, and syntax errors become possible."""
        mask = np.ones((len(programs), self.size), bool)
        if grammar:
            for row, program in enumerate(programs):
                wants_operand = bool(program) and program[-1] in OPERAND_OPS
                mask[row, : self.n_opcodes] = not wants_operand
                mask[row, self.n_opcodes :] = wants_operand
        return mask
