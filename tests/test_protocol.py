"""The improver's calls to the host (stop/sandbox/protocol.py): the host answers every
request with a value or a typed refusal, the unknown op included, and the proxies turn
refusals into the exceptions improvers expect."""

from __future__ import annotations

import pytest

import utilities.speed
from stop.errors import BudgetExhausted, StopError
from stop.host.improver import ImproverHost
from stop.llm import ModelSettings, build_backend
from stop.llm.model import LanguageModel
from stop.records import UtilityOptions
from stop.sandbox.protocol import Op, Refusal, request, unwrap
from stop.scoring.utility import Target
from tests.helpers import FIB, calibrated


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    script = tmp_path_factory.mktemp("script") / "script.json"
    script.write_text('["no code here"]')
    model = LanguageModel(
        build_backend(ModelSettings(backend="scripted", script=script)),
        max_responses_per_call=2,
        max_tokens=64,
        budget_calls=1,
    )
    target = Target(path=FIB, source=FIB.read_text())
    utility = calibrated(utilities.speed.build(target, UtilityOptions(timeout_s=5)), target)
    utility.budget = 1
    seen = []
    host = ImproverHost(FIB.read_text(), utility, model, on_candidate=lambda *c: seen.append(c))
    yield host
    host.prefetcher.close()


def test_an_unknown_op_is_answered_as_one(host):
    reply = host.handle({"op": "set_budget", "budget": 10**9})
    assert reply["kind"] == Refusal.UNKNOWN_OP.value and "set_budget" in reply["error"]
    with pytest.raises(StopError, match="unknown op"):
        unwrap(reply)


def test_a_request_without_its_fields_is_malformed(host):
    for body in (
        request(Op.RANK, programs=[1]),
        request(Op.UTILITY, program=FIB.read_text(), budget=10**9),  # no such field
        request(Op.BATCH_PROMPT, expertise="x", messages=["y"], temperature="hot"),
    ):
        assert host.handle(body)["kind"] == Refusal.MALFORMED.value, body


def test_spent_budgets_are_budget_refusals(host):
    answers = [host.handle(request(Op.UTILITY, program=FIB.read_text())) for _ in range(2)]
    assert "ok" in answers[0] and answers[1]["kind"] == Refusal.BUDGET.value
    with pytest.raises(BudgetExhausted):
        unwrap(answers[1])
    prompt = request(Op.BATCH_PROMPT, expertise="x", messages=["y"], temperature=0.7)
    assert "ok" in host.handle(prompt)
    assert host.handle(prompt)["kind"] == Refusal.BUDGET.value
