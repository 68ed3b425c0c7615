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


def test_a_spent_model_budget_is_a_refusal_and_a_spent_utility_scores_0(host):
    # STOP's semantics: its model raises past the call budget; its utility returns 0.
    answers = [host.handle(request(Op.UTILITY, program=FIB.read_text())) for _ in range(2)]
    assert answers[0]["ok"] > 0 and answers[1] == {"ok": 0.0, "uses": 1, "budget": 1}
    spent = host.handle(request(Op.UTILITY, program=FIB.read_text(), feedback=True))
    assert spent["ok"]["score"] == 0.0 and spent["ok"]["status"] == "budget_spent"
    prompt = request(Op.BATCH_PROMPT, expertise="x", messages=["y"], temperature=0.7)
    assert "ok" in host.handle(prompt)
    refused = host.handle(prompt)
    assert refused["kind"] == Refusal.BUDGET.value
    with pytest.raises(BudgetExhausted):
        unwrap(refused)
    # Each budget asked past is one finding, however often.
    assert len([f for f in host.bait if "past its budget" in f]) == 2
