"""The learned reranker: it must rank a held-out buggy near-copy of a good program below the
good program, learn from hard negatives, be deterministic, and save and load exactly."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stop.errors import BadInput, StopError
from stop.search import reranker as rerank
from stop.search.reranker import NotEnoughData, Reranker, Scored, evaluation_savings

# Fibonacci variants. Each good template has a buggy twin that differs by one edit: the
# off-by-one `range(n - 1)` or the base case `return n * 2`. Both fail with wrong_answer.
ITERATIVE = """def {f}({n}):
    {a}, {b} = 0, 1
    for {i} in range({n}{off}):
        {a}, {b} = {b}, {a} + {b}
    return {a}
"""
WHILE = """def {f}({n}):
    {a}, {b} = 0, 1
    {i} = 0
    while {i} < {n}{off}:
        {a}, {b} = {b}, {a} + {b}
        {i} += 1
    return {a}
"""
LRU = """from functools import lru_cache


@lru_cache(maxsize=None)
def {f}({n}):
    if {n} < 2:
        return {n}{twice}
    return {f}({n} - 1) + {f}({n} - 2)
"""
DICT_MEMO = """def {f}({n}, {a}=None):
    if {a} is None:
        {a} = {{}}
    if {n} < 2:
        return {n}{twice}
    if {n} not in {a}:
        {a}[{n}] = {f}({n} - 1, {a}) + {f}({n} - 2, {a})
    return {a}[{n}]
"""
TEMPLATES = {"iterative": ITERATIVE, "while": WHILE, "lru": LRU, "dict_memo": DICT_MEMO}
NAIVE = """def {f}({n}):
    if {n} < 2:
        return {n}
    return {f}({n} - 1) + {f}({n} - 2)
"""
JUNK = [
    Scored(program="def fib(n) return n", score=0.0, status="syntax_error"),
    Scored(program="def fib(n):\n    raise RuntimeError('todo')\n", score=0.0, status="crash"),
    Scored(program="", score=0.0, status="no_code"),
    Scored(program="def fib(n):\n    while True:\n        pass\n", score=0.0, status="timeout"),
]
FUNCS = ["fib", "fibonacci", "fast_fib", "fib_fast", "compute_fib", "nth_fib"]
ARGS = ["n", "k", "num", "count", "m", "idx"]
VARS = ["a", "b", "x", "y", "prev", "curr", "lo", "hi", "cache", "memo", "seen", "table"]
LOOPS = ["_", "i", "j", "step", "t"]


def names(rng: random.Random, pool: dict[str, list[str]] | None = None) -> dict[str, str]:
    pool = pool or {"f": FUNCS, "n": ARGS, "v": VARS, "i": LOOPS}
    a, b = rng.sample(pool["v"], 2)
    return {
        "f": rng.choice(pool["f"]),
        "n": rng.choice(pool["n"]),
        "a": a,
        "b": b,
        "i": rng.choice(pool["i"]),
    }


def variant(template: str, name: dict[str, str], buggy: bool) -> str:
    return template.format(**name, off=" - 1" if buggy else "", twice=" * 2" if buggy else "")


def training_set(seed: int) -> list[Scored]:
    """Per template: good variants (score 0.9-1.0), buggy twins of some of them (the hard
    negatives: they look just like good code), a slow correct version, and junk."""
    rng = random.Random(seed)
    examples: list[Scored] = []
    for template in TEMPLATES.values():
        for k in range(4):
            name = names(rng)
            good = variant(template, name, buggy=False)
            examples.append(Scored(program=good, score=rng.uniform(0.9, 1.0), status="ok"))
            if k < 2:
                bad = variant(template, name, buggy=True)
                examples.append(Scored(program=bad, score=0.0, status="wrong_answer"))
    for _ in range(3):
        examples.append(Scored(program=NAIVE.format(**names(rng)), score=0.1, status="ok"))
    examples.extend(JUNK)
    rng.shuffle(examples)
    return examples


@pytest.fixture(scope="module")
def fib_examples() -> list[Scored]:
    return training_set(seed=0)


@pytest.fixture(scope="module")
def fib_model(fib_examples: list[Scored]) -> Reranker:
    return Reranker.fit(fib_examples, seed=0)


# The acceptance test, several data sets and seeds so that it is not one lucky draw.
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("unseen_names", [False, True])
def test_held_out_hard_negative_ranks_below_held_out_correct(seed: int, unseen_names: bool):
    examples = training_set(seed)
    model = Reranker.fit(examples, seed=seed)
    seen = {e.program for e in examples}
    rng = random.Random(1000 + seed)
    # Unseen names share no identifier with training: only the bug's shape can tell.
    pool = {"f": ["fib_n", "fibo"], "n": ["q", "size"], "v": ["u", "w", "p"], "i": ["r"]}
    for kind, template in TEMPLATES.items():
        while True:
            name = names(rng, pool if unseen_names else None)
            good = variant(template, name, buggy=False)
            bad = variant(template, name, buggy=True)
            if good not in seen and bad not in seen:
                break
        good_score, bad_score = model.predict([good, bad])
        assert good_score > bad_score, (kind, seed, unseen_names)
        assert model.rank([bad, good]) == [1, 0]


def test_model_ranks_failures_below_passes_on_its_training_set(fib_examples, fib_model):
    scores = fib_model.predict([e.program for e in fib_examples])
    pairs = list(zip(scores, fib_examples, strict=True))
    ok = [s for s, e in pairs if e.status == "ok" and e.score > 0.5]
    failed = [s for s, e in pairs if e.status != "ok"]
    assert min(ok) > max(failed)


def test_an_untrained_model_cannot_pass_the_acceptance_test():
    # The check above must be able to fail: all-zero weights tie the pair, and a tie is
    # not "ranked below".
    blank = Reranker.from_json(Reranker(np.zeros(rerank.N_FEATURES)).to_json())
    name = names(random.Random(0))
    good_score, bad_score = blank.predict(
        [variant(ITERATIVE, name, False), variant(ITERATIVE, name, True)]
    )
    assert not good_score > bad_score


@pytest.mark.parametrize(
    "examples",
    [
        [],
        [Scored(program="a", score=1.0, status="ok"), Scored(program="b", score=0, status="crash")],
        [Scored(program=p, score=0.0, status="crash") for p in "abcdef"],  # no ok one
        [Scored(program=p, score=0.5, status="ok") for p in "abcdef"],  # all tie
        [Scored(program=p, score=0.5 + 1e-12 * i, status="ok") for i, p in enumerate("abcdef")],
    ],
    ids=["empty", "below_min", "all_failed", "all_tied", "all_tied_within_margin"],
)
def test_too_little_data_raises_not_enough_data(examples):
    with pytest.raises(NotEnoughData) as info:
        Reranker.fit(examples)
    assert isinstance(info.value, StopError)  # the caller's one except clause catches it


def test_minimum_is_enough():
    examples = [Scored(program=p, score=float(s), status="ok") for s, p in enumerate("abcd")]
    assert len(examples) == Reranker.MIN_EXAMPLES
    model = Reranker.fit(examples)
    assert model.pairs == 6
    assert model.rank(list("abcd")) == [3, 2, 1, 0]


def test_scored_rejects_unknown_fields():
    with pytest.raises(ValueError):
        Scored(program="x", score=1.0, status="ok", extra=1)


def test_fit_is_deterministic_and_the_seed_matters_only_when_sampling(monkeypatch, fib_examples):
    programs = [e.program for e in fib_examples]
    first = Reranker.fit(fib_examples, seed=7).predict(programs)
    assert Reranker.fit(fib_examples, seed=7).predict(programs) == first
    assert Reranker.fit(fib_examples, seed=8).predict(programs) == first  # all pairs used

    monkeypatch.setattr(rerank, "MAX_PAIRS", 60)
    sampled = Reranker.fit(fib_examples, seed=7)
    assert sampled.pairs == 60
    assert Reranker.fit(fib_examples, seed=7).predict(programs) == sampled.predict(programs)
    assert Reranker.fit(fib_examples, seed=8).predict(programs) != sampled.predict(programs)


def test_rank_is_a_stable_permutation_and_select_takes_the_top(fib_model, fib_examples):
    programs = [e.program for e in fib_examples]
    order = fib_model.rank(programs)
    assert sorted(order) == list(range(len(programs)))
    scores = fib_model.predict(programs)
    assert [scores[i] for i in order] == sorted(scores, reverse=True)
    # Ties keep input order: the same program three times, and two empty ones.
    assert fib_model.rank(["x = 1", "x = 1", "x = 1"]) == [0, 1, 2]
    tied = fib_model.rank(["", programs[0], ""])
    assert tied.index(0) < tied.index(2)

    assert fib_model.select(programs, 5) == order[:5]
    assert fib_model.select(programs, 0) == []
    assert fib_model.select(programs, len(programs) + 10) == order
    assert fib_model.select([], 3) == [] and fib_model.predict([]) == []
    with pytest.raises(BadInput):
        fib_model.select(programs, -1)


def test_hard_negative_is_counted_and_demoted_after_retraining():
    # Generation 1: the lru_cache style passes, everything else is slow or fails, so the
    # model learns that lru_cache looks promising.
    rng = random.Random(5)
    gen1 = [
        Scored(program=variant(LRU, names(rng), False), score=rng.uniform(0.9, 1), status="ok")
        for _ in range(5)
    ]
    gen1 += [Scored(program=NAIVE.format(**names(rng)), score=0.1, status="ok") for _ in range(3)]
    gen1 += JUNK
    previous = Reranker.fit(gen1)
    assert previous.hard_negatives == 0

    # Generation 2: an lru_cache program that fails (its bug is new: it never appeared in
    # generation 1), and more good candidates of another style.
    trap = variant(LRU, names(rng), False).replace("- 2)", "- 3)")
    gen2 = gen1 + [Scored(program=trap, score=0.0, status="wrong_answer")]
    gen2 += [
        Scored(program=variant(ITERATIVE, names(rng), False), score=0.95, status="ok")
        for _ in range(4)
    ]
    programs = [e.program for e in gen2]
    trap_index = programs.index(trap)
    rank_before = previous.rank(programs).index(trap_index)
    assert rank_before < len(programs) * rerank.HARD_TOP_FRACTION  # the model fell for it

    retrained = Reranker.fit(gen2, previous=previous)
    assert retrained.hard_negatives >= 1
    assert retrained.rank(programs).index(trap_index) > rank_before
    # Without the previous model nothing is a hard negative, and the extra weight is what
    # pushes the trap further down.
    plain = Reranker.fit(gen2)
    assert plain.hard_negatives == 0
    assert retrained.predict([trap])[0] - max(retrained.predict(programs)) < plain.predict([trap])[
        0
    ] - max(plain.predict(programs))


def test_json_round_trip_predicts_identically(fib_model, fib_examples):
    programs = [e.program for e in fib_examples] + ["", "ünïcode ≠ ascii", "\x00\ud800"]
    text = fib_model.to_json()
    loaded = Reranker.from_json(text)
    assert loaded.predict(programs) == fib_model.predict(programs)
    assert (loaded.pairs, loaded.hard_negatives) == (fib_model.pairs, fib_model.hard_negatives)
    assert loaded.to_json() == text
    assert json.loads(text)["format_version"] == rerank.FORMAT_VERSION


def _edited(text: str, **changes) -> str:
    record = json.loads(text)
    record.update(changes)
    return json.dumps(record)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda t: "not json at all",
        lambda t: t[: len(t) // 2],
        lambda t: "{}",
        lambda t: _edited(t, format_version=rerank.FORMAT_VERSION + 1),
        lambda t: _edited(t, n_buckets=1 << 12),
        lambda t: _edited(t, max_ngram=2),
        lambda t: _edited(t, surprise=1),
        lambda t: _edited(t, indices=[rerank.N_FEATURES], weights=[1.0]),
        lambda t: _edited(t, indices=[-1], weights=[1.0]),
        lambda t: _edited(t, indices=[1, 1], weights=[1.0, 2.0]),
        lambda t: _edited(t, indices=[1, 2], weights=[1.0]),
        lambda t: _edited(t, indices=[1], weights=["NaN"]),
        lambda t: _edited(t, pairs=-1),
    ],
    ids=[
        "garbage",
        "truncated",
        "empty_object",
        "version",
        "buckets",
        "ngram",
        "extra_key",
        "index_high",
        "index_negative",
        "index_repeats",
        "lengths",
        "nan",
        "negative",
    ],
)
def test_from_json_rejects_corrupt_or_incompatible_records(fib_model, corrupt):
    with pytest.raises(BadInput):
        Reranker.from_json(corrupt(fib_model.to_json()))


def test_saved_model_means_the_same_in_a_process_with_another_hash_seed(fib_model, tmp_path):
    # Python salts str hashes per process; the features must not depend on that.
    (tmp_path / "model.json").write_text(fib_model.to_json())
    probe = [ITERATIVE.format(f="fib", n="n", a="a", b="b", i="_", off=""), "x = 1", ""]
    script = (
        "import json, sys; from pathlib import Path; from stop.search.reranker import Reranker; "
        "m = Reranker.from_json(Path(sys.argv[1]).read_text()); "
        "print(json.dumps(m.predict(json.loads(sys.argv[2]))))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "model.json"), json.dumps(probe)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(out.stdout) == fib_model.predict(probe)


def test_evaluation_savings(fib_model):
    rng = random.Random(99)
    name = names(rng)
    held_out = [
        Scored(program=variant(LRU, name, True), score=0.0, status="wrong_answer"),
        Scored(program=NAIVE.format(**name), score=0.1, status="ok"),
        Scored(program="def fib(n) return", score=0.0, status="syntax_error"),
        Scored(program=variant(LRU, name, False), score=1.0, status="ok"),
    ]
    # The good program is ranked first: three of four evaluations saved.
    assert evaluation_savings(fib_model, held_out) == pytest.approx(0.75)
    failed = [e.model_copy(update={"status": "crash"}) for e in held_out]
    assert evaluation_savings(fib_model, failed) == 0.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=300), max_size=6))
def test_predict_is_finite_for_any_text(fib_model, programs):
    scores = fib_model.predict(programs)
    assert len(scores) == len(programs)
    assert all(math.isfinite(s) for s in scores)
    assert sorted(fib_model.rank(programs)) == list(range(len(programs)))


@pytest.mark.parametrize(
    "program", ["(" * 5000, "[" * 200 + "]" * 200, "x = '\\d'\n", "a\x00b", "\ud800", "  \n\t"]
)
def test_predict_survives_odd_programs(fib_model, program):
    assert math.isfinite(fib_model.predict([program])[0])


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.builds(
            Scored,
            program=st.text(max_size=80),
            score=st.floats(allow_nan=True, allow_infinity=True),
            status=st.sampled_from(["ok", "crash", "wrong_answer"]),
        ),
        min_size=4,
        max_size=12,
    )
)
def test_fit_on_arbitrary_data_either_trains_or_says_not_enough(examples):
    try:
        model = Reranker.fit(examples)
    except NotEnoughData:
        return
    assert model.pairs > 0
    assert all(math.isfinite(s) for s in model.predict([e.program for e in examples]))
