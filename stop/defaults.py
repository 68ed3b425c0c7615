"""Defaults in one place: the budgets for each kind of model, and what a self-improve run
may spend at most. CLI options default to "unset"; these fill them in."""

from __future__ import annotations

from typing import Any

from stop.errors import BadInput
from stop.llm.prices import estimate as price_estimate
from stop.llm.prices import usd
from stop.records import Budget, ImproveConfig, Money, SelfImproveConfig, Shape


class Profile(Shape):
    """The budgets that suit one kind of model."""

    improve: Budget  # `stop improve`
    round: Budget  # the improver proposing a generation; evaluations: meta-utility uses
    test: Budget  # one meta-utility test; evaluations: task-utility uses
    tests: int  # meta-utility tests (k)


# The embedded model is slow (about 25 tokens/s on 2 cores) and weak; a server model is
# neither.
LOCAL = Profile(
    improve=Budget(model_calls=16, max_responses_per_call=4, max_tokens=256, evaluations=5),
    round=Budget(
        model_calls=2, max_responses_per_call=2, max_tokens=256, evaluations=3, timeout_s=3600
    ),
    test=Budget(model_calls=2, max_responses_per_call=2, max_tokens=256, evaluations=3),
    tests=2,
)
SERVER = Profile(
    improve=Budget(model_calls=16, max_responses_per_call=4, max_tokens=2048, evaluations=5),
    round=Budget(
        model_calls=4, max_responses_per_call=4, max_tokens=2048, evaluations=5, timeout_s=3600
    ),
    test=Budget(model_calls=4, max_responses_per_call=4, max_tokens=2048, evaluations=5),
    tests=3,
)


def profile(backend: str) -> Profile:
    return LOCAL if backend == "local" else SERVER


def override(budget: Budget, **given: Any) -> Budget:
    """`budget` with the fields the user set (not None)."""
    return budget.model_copy(update={k: v for k, v in given.items() if v is not None})


class Preset(Shape):
    """Another tool's settings, by name (`--preset`), laid over a kind of model's profile:
    what is not named here (tokens per response, time limits) stays the profile's."""

    name: str
    max_responses_per_call: int
    model_requests: int  # model calls per improver run, each of at most the above
    evaluations: int  # of the utility per improver run; of the meta-utility per round
    tests: int  # meta-utility tests (k)
    rounds: int  # of self-improvement

    def apply(self, base: Profile) -> Profile:
        def budget(b: Budget) -> Budget:
            return override(
                b,
                max_responses_per_call=self.max_responses_per_call,
                model_requests=self.model_requests,
                # A completion cap that the calls alone reach: requests x samples.
                model_calls=self.model_requests * self.max_responses_per_call,
                evaluations=self.evaluations,
            )

        return Profile(
            improve=budget(base.improve),
            round=budget(base.round),
            test=budget(base.test),
            tests=self.tests,
        )


# microsoft/stop's config.py: n = 6 samples per call, m = 4 calls, n * m + 1 = 25
# evaluations of the utility and of the meta-utility, 5 meta-utility tests, 6 rounds.
# Temperatures are its improvers' own (0.7 for the seed).
PRESETS = {
    "stop-paper": Preset(
        name="stop-paper",
        max_responses_per_call=6,
        model_requests=4,
        evaluations=25,
        tests=5,
        rounds=6,
    ),
}


def preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise BadInput(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None


LOCAL_TOKENS_PER_S = 25.0  # generation on 2 cores; prompts are read about ten times faster
PROMPT_TOKENS = 900  # a typical improver prompt


class Estimate(Shape):
    calls: int
    tokens: int
    local_seconds: float  # on the embedded model
    usd: float | None = None  # at the run's prices, every reply at max_tokens; None: unpriced

    def line(self, backend: str, money: Money | None) -> str:
        """The pre-run budget line `improve` and `self-improve` print."""
        line = f"Budget: at most {self.calls} model calls, about {self.tokens} tokens"
        if backend == "local":
            line += f"; on the embedded model at most about {self.local_seconds / 60:.0f} min"
        if self.usd:
            line += f"; at most {usd(self.usd)}"
        if money is not None and money.max_usd is not None:
            line += f", spending capped at {usd(money.max_usd)}"
        return line + " (cached answers cost nothing)."


def _bound(calls: int, max_tokens: int, money: Money | None) -> Estimate:
    usd = None
    if money is not None:
        usd = price_estimate(
            money.prices, requests=calls, prompt_tokens_each=PROMPT_TOKENS, max_tokens=max_tokens
        )
    return Estimate(
        calls=calls,
        tokens=calls * (max_tokens + PROMPT_TOKENS),
        local_seconds=calls * (max_tokens / LOCAL_TOKENS_PER_S + PROMPT_TOKENS / 250),
        usd=usd,
    )


def estimate_improve(config: ImproveConfig) -> Estimate:
    """Upper bounds on what an improve run spends: its model budget used in full."""
    return _bound(config.budget.model_calls, config.budget.max_tokens, config.money)


def estimate(config: SelfImproveConfig) -> Estimate:
    """Upper bounds on what a self-improve run spends: every budget used in full, nothing
    cached. Each meta-utility score runs k tests; a round scores up to its evaluations
    plus the host's own re-scoring; generation 0 is scored once."""
    per_meta = config.tests * config.test_budget.model_calls
    round_ = config.round_budget
    calls = per_meta + config.rounds * (round_.model_calls + (round_.evaluations + 1) * per_meta)
    max_tokens = max(round_.max_tokens, config.test_budget.max_tokens)
    return _bound(calls, max_tokens, config.money)
