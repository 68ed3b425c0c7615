"""What the sandbox's tests (tests/test_sandbox*.py) share: running a timed call or an
improve job in a real sandbox, reading its reply, and checking nothing of it survived.
"""

from __future__ import annotations

import os
import signal
import textwrap
from typing import Any

from stop.sandbox import slots
from stop.sandbox.runner import Limits, SandboxResult, run_job
from tests import jailcheck

ROOT = os.geteuid() == 0
FAST = Limits(wall_s=3)


def call(
    code: str,
    inputs: list[list[Any]] | None = None,
    *,
    entry: str = "f",
    limits: Limits = FAST,
    repeat: int = 1,
    preload: tuple[str, ...] = (),
) -> SandboxResult:
    payload = {
        "code": textwrap.dedent(code),
        "entry": entry,
        "inputs": [[]] if inputs is None else inputs,
        "repeat": repeat,
    }
    return settled(run_job("call", payload, limits, preload=preload))


def improver(code: str, limits: Limits = FAST, guard: bool = False) -> SandboxResult:
    """Run `improve_algorithm` from `code` as an improve job: in the sandbox parent
    itself, where (unlike a timed call) processes and threads may be started once the
    audit-hook guard, which blocks forks, is left out to test the walls beneath it."""
    payload = {
        "improver": textwrap.dedent(code),
        "initial_solution": "x = 1\n",
        "language_model": {"budget": 0, "max_responses_per_call": 1},
        "utility": {"name": "u", "description": "d", "budget": 0},
    }
    return settled(run_job("improve", payload, limits, guard=guard))


def settled(result: SandboxResult) -> SandboxResult:
    """The result once the sweep of its user id and folders, just after it, is done."""
    slots.settle()
    return result


def reply(result: SandboxResult) -> dict[str, Any]:
    """The child's reply, after checking that the host side saw a clean run."""
    assert result.status == "ok", (result.error, result.stderr)
    assert isinstance(result.value, dict), result
    return result.value


def outputs(result: SandboxResult) -> list[Any]:
    value = reply(result)
    assert value["outcome"] == "ok", value
    return value["outputs"]


def sandbox_uid(result: SandboxResult) -> int:
    uids = [int(x.split("=", 1)[1]) for x in result.isolation if x.startswith("uid=")]
    assert len(uids) == 1, result.isolation
    return uids[0]


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def assert_no_survivors(result: SandboxResult) -> None:
    """Nothing is left of the jail (both modes), nor, as root, of its private uid."""
    left = jailcheck.survivors({jailcheck.pid_namespace(result)})
    assert not left, f"processes of the sandbox's jail survived: {left}"
    if ROOT:
        left = jailcheck.uid_survivors({sandbox_uid(result)}, grace_s=2.0)
        kill_all(left)  # never leave a runaway behind, even when the test fails
        assert not left, f"processes of the sandbox uid survived: {left}"
