"""Money: prices from flags, a prices file or the shipped one (stop/llm/prices.py), what
a run's tokens cost and could cost at most, and the spending `stop lineage`, `stop view`,
the HTML export, the command summaries and `--json` show for a priced run (and do not
show for an unpriced one)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from rich.console import Console

from stop.errors import BadInput
from stop.llm import prices as P
from stop.llm.prices import (
    NO_CHARGE,
    Prices,
    cost,
    estimate,
    load_prices_file,
    resolve_prices,
    shipped_prices,
    spending,
    usd,
)
from stop.records import (
    CandidateRecord,
    Evaluation,
    GenerationRecord,
    ImproveConfig,
    ImproveResult,
    ImproverOutcome,
    SelfImproveConfig,
    SelfImproveResult,
    Usage,
)
from stop.store import RunStore, read_generations
from stop.view.html import export_html
from stop.view.improve import summary
from stop.view.render import lineage
from stop.view.runs import read_run
from stop.view.self_improve import generations_summary
from tests.helpers import run_stop
from tests.run_fixture import make_run

GOOD = {
    "gpt-test": {"input_per_mtok": 0.15, "output_per_mtok": 0.6, "source": "a test, 2026"},
    "other": {"input_per_mtok": 1, "output_per_mtok": 2},
}


def _file(tmp_path: Path, content: object, name: str = "prices.json") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def _resolve(model="gpt-test", *, backend="openai", inp=None, out=None, file=None, required=True):
    return resolve_prices(
        model,
        backend=backend,
        input_per_mtok=inp,
        output_per_mtok=out,
        prices_file=file,
        required=required,
    )


def _one_line(exc: pytest.ExceptionInfo[BadInput], *words: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


# --- the prices file ----------------------------------------------------------------


def test_a_prices_file_maps_model_names_to_prices(tmp_path):
    table = load_prices_file(_file(tmp_path, GOOD))
    assert table["gpt-test"] == Prices(
        input_per_mtok=0.15, output_per_mtok=0.6, source="a test, 2026"
    )
    assert table["other"].source is None  # where it comes from is optional


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ('{"gpt-test": {"input_per_mtok": 1,', ["is not JSON", "line 1 column"]),
        ("[1, 2]", ["must be a JSON object", "not a list"]),
        (
            {"gpt-test": {"input": 1, "output_per_mtok": 2}},
            ["gpt-test.input_per_mtok", "Field required"],
        ),
        (
            {"gpt-test": {"input_per_mtok": 1, "output_per_mtok": 2, "currency": "EUR"}},
            ["gpt-test.currency", "Extra inputs are not permitted"],
        ),
        (
            {"gpt-test": {"input_per_mtok": -1, "output_per_mtok": 2}},
            ["gpt-test.input_per_mtok", "greater than or equal to 0"],
        ),
        ({"gpt-test": {"input_per_mtok": "cheap", "output_per_mtok": 2}}, ["input_per_mtok"]),
        ({"gpt-test": 0.15}, ["gpt-test"]),
    ],
)
def test_a_malformed_prices_file_is_one_line_naming_it_and_what_is_wrong(tmp_path, content, words):
    path = _file(tmp_path, content)
    with pytest.raises(BadInput) as exc:
        load_prices_file(path)
    _one_line(exc, str(path), *words)


def test_a_missing_or_unreadable_prices_file_is_bad_input(tmp_path):
    with pytest.raises(BadInput) as exc:
        load_prices_file(tmp_path / "nowhere.json")
    _one_line(exc, "nowhere.json", "does not exist")
    with pytest.raises(BadInput) as exc:
        load_prices_file(tmp_path)
    _one_line(exc, "is a directory")
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe{")
    with pytest.raises(BadInput) as exc:
        load_prices_file(binary)
    _one_line(exc, "not UTF-8")


def test_the_shipped_prices_parse_and_say_where_each_comes_from():
    # Whatever it ships (nothing, today), every figure names its source.
    for name, price in shipped_prices().items():
        assert price.source, f"stop/llm/prices.json: {name} has no source"


# --- resolving the run's prices -----------------------------------------------------


def test_flags_win_over_any_file(tmp_path):
    price = _resolve(inp=3.0, out=15.0, file=_file(tmp_path, GOOD))
    assert (price.input_per_mtok, price.output_per_mtok, price.source) == (3.0, 15.0, "flags")
    # Even for the scripted backend: a test can price a scripted run.
    assert _resolve(backend="scripted", inp=1.0, out=2.0).output_per_mtok == 2.0


def test_a_users_file_then_the_shipped_one(tmp_path, monkeypatch):
    shipped = {"gpt-test": Prices(input_per_mtok=9, output_per_mtok=9, source="shipped")}
    monkeypatch.setattr(P, "shipped_prices", lambda: shipped)
    assert _resolve().source == "shipped"
    assert _resolve(file=_file(tmp_path, GOOD)).source == "a test, 2026"
    # The user's file replaces the shipped table: a model it lacks has no price.
    only_other = _file(tmp_path, {"other": GOOD["other"]}, "other.json")
    assert _resolve(file=only_other, required=False) is None
    with pytest.raises(BadInput):
        _resolve(file=only_other)


def test_the_local_and_scripted_models_cost_nothing(tmp_path):
    for backend in ("local", "scripted"):
        assert _resolve(None, backend=backend) == NO_CHARGE
        assert _resolve("gemma", backend=backend, file=_file(tmp_path, GOOD)) == NO_CHARGE
    # A file the user names prices a model it names, whatever the backend.
    assert _resolve("other", backend="scripted", file=_file(tmp_path, GOOD)).output_per_mtok == 2
    # And a malformed one is refused even where nothing would be charged.
    with pytest.raises(BadInput):
        _resolve(backend="local", file=_file(tmp_path, "{", "bad.json"))


def test_a_model_without_a_price_is_bad_input_only_under_a_cap(monkeypatch):
    monkeypatch.setattr(P, "shipped_prices", dict)
    assert _resolve("mystery", required=False) is None  # counts tokens, not money
    with pytest.raises(BadInput) as exc:
        _resolve("mystery")
    assert str(exc.value) == (
        "no price for model mystery: pass --price-input and --price-output "
        "(USD per million tokens) or a --prices file"
    )
    with pytest.raises(BadInput) as exc:
        _resolve(None)
    _one_line(exc, "no price for model of the openai backend")


@pytest.mark.parametrize(
    ("inp", "out", "words"),
    [
        (1.0, None, ["go together"]),
        (None, 2.0, ["go together"]),
        (-1.0, 2.0, ["--price-input", "≥ 0"]),
        (1.0, math.nan, ["--price-output"]),
        (1.0, math.inf, ["--price-output"]),
    ],
)
def test_bad_price_flags_are_bad_input(inp, out, words):
    with pytest.raises(BadInput) as exc:
        _resolve(inp=inp, out=out)
    _one_line(exc, *words)


# --- arithmetic ---------------------------------------------------------------------


def test_cost_is_per_million_tokens_input_and_output_apart():
    price = Prices(input_per_mtok=0.15, output_per_mtok=0.6)
    assert cost(price, 1_000_000, 0) == pytest.approx(0.15)
    assert cost(price, 0, 1_000_000) == pytest.approx(0.6)
    assert cost(price, 2000, 500) == pytest.approx((2000 * 0.15 + 500 * 0.6) / 1e6)
    assert cost(NO_CHARGE, 10**9, 10**9) == 0


def test_the_estimate_is_every_reply_at_max_tokens():
    price = Prices(input_per_mtok=1.0, output_per_mtok=4.0)
    worst = estimate(price, requests=40, prompt_tokens_each=1500, max_tokens=1024)
    assert worst == pytest.approx(40 * (1500 * 1.0 + 1024 * 4.0) / 1e6)
    assert estimate(price, requests=0, prompt_tokens_each=1500, max_tokens=1024) == 0


def test_money_reads_as_money():
    assert usd(0.0123) == "$0.0123"
    assert usd(123.456) == "$123.46"
    assert usd(0.00001) == "<$0.0001"  # spent, if less than shown
    assert spending(0, 0) is None
    assert spending(0.0123, 0) == "$0.0123"
    assert spending(0.0123, 0.004) == "$0.0123 ($0.0040 replayed from cache)"


# --- spending in the views ----------------------------------------------------------


def _text(renderable) -> str:
    console = Console(width=300, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def _priced_self_improve_run(runs_dir: Path) -> Path:
    """A fixture self-improve run whose generations cost 0.01, 0.02, 0.03 USD, the last
    with 0.005 of it replayed from the cache."""
    store = make_run(runs_dir, 3)
    for record in read_generations(store.dir):
        usage = record.usage.model_copy(
            update={"usd": 0.01 * (record.gen + 1), "usd_cached": 0.005 if record.gen == 2 else 0}
        )
        store.write_record(
            f"generations/gen_{record.gen:03d}.json", record.model_copy(update={"usage": usage})
        )
    return store.dir


def test_lineage_view_and_html_show_spending_per_generation_and_per_run(tmp_path):
    view = read_run(_priced_self_improve_run(tmp_path / "runs"))
    assert [n.usd for n in view.nodes] == pytest.approx([0.01, 0.02, 0.03])
    assert view.usd == pytest.approx(0.06) and view.usd_cached == pytest.approx(0.005)

    shown = _text(lineage(view))
    assert "spent $0.0600 ($0.0050 replayed from cache)" in shown  # the run, in its title
    for gen, amount in enumerate(["$0.0100", "$0.0200", "$0.0300"]):
        (line,) = [x for x in shown.splitlines() if f"gen {gen} " in x]
        assert amount in line

    from stop.view.app import LineageApp

    app = LineageApp(view)
    assert "model spending, this generation: $0.0300 ($0.0050 replayed from cache)" in _text(
        app._summary(view.nodes[2])
    )

    page = export_html(view)
    assert "model spending $0.0600 ($0.0050 replayed from cache)" in page
    assert "<th>USD</th>" in page
    assert page.count("<td class='num usd'>") == 3 and "$0.0200</td>" in page


def test_an_unpriced_run_shows_no_money(tmp_path):
    store = make_run(tmp_path / "runs", 3)
    view = read_run(store.dir)
    assert view.usd == 0
    assert "$" not in _text(lineage(view))
    from stop.view.app import LineageApp

    assert "spending" not in _text(LineageApp(view)._summary(view.nodes[1]))
    page = export_html(view)
    assert "USD" not in page and "spending" not in page


def test_lineage_and_runs_json_carry_the_spending(tmp_path):
    run_dir = _priced_self_improve_run(tmp_path / "runs")
    args = ("--runs-dir", str(tmp_path / "runs"))
    result = run_stop("lineage", run_dir.name, "--json", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["usd"] == pytest.approx(0.06) and out["usd_cached"] == pytest.approx(0.005)
    assert [g["usd"] for g in out["generations"]] == pytest.approx([0.01, 0.02, 0.03])
    listed = run_stop("runs", "--json", *args, cwd=tmp_path)
    assert json.loads(listed.stdout)[0]["usd"] == pytest.approx(0.06)


def test_the_self_improve_summary_has_a_usd_column_only_when_priced(tmp_path):
    run_dir = _priced_self_improve_run(tmp_path / "runs")
    generations = read_generations(run_dir)
    config = SelfImproveConfig.model_validate_json((run_dir / "config.json").read_text())

    def result(gens: list[GenerationRecord]) -> SelfImproveResult:
        return SelfImproveResult(
            run_id=run_dir.name,
            run_dir=str(run_dir),
            best_generation=1,
            best_path="best.py",
            circumvention_rate=0.0,
            generations=gens,
        )

    shown = _text(generations_summary(result(generations), config))
    assert " usd " in shown and "$0.0200" in shown
    assert "Model spending: $0.0600 ($0.0050 replayed from cache)" in shown
    # The same record serialised: the money is in the --json output too.
    dumped = json.loads(result(generations).model_dump_json())
    assert dumped["generations"][2]["usage"]["usd_cached"] == 0.005
    unpriced = [g.model_copy(update={"usage": Usage(calls=4)}) for g in generations]
    shown = _text(generations_summary(result(unpriced), config))
    assert "usd" not in shown and "$" not in shown


def _improve_run(runs_dir: Path, usage: Usage) -> tuple[Path, ImproveResult]:
    """An improve run written through the real store: the original, unimproved."""
    program = "def f(x):\n    return x\n"
    config = ImproveConfig(
        target=Path("t.py"),
        budget={"model_calls": 2, "max_responses_per_call": 1, "max_tokens": 64, "evaluations": 2},
        runs_dir=runs_dir,
    )
    store = RunStore.create(runs_dir, "improve", config)
    store.write_text("candidates/c000.py", program)
    evaluation = Evaluation(status="ok", score=1.0, seconds=0.1)
    candidate = CandidateRecord(
        index=0, origin="original", path="candidates/c000.py", evaluation=evaluation
    )
    store.write_record("candidates/c000.json", candidate)
    store.write_text("best.py", program)
    result = ImproveResult(
        run_id=store.id,
        run_dir=str(store.dir),
        target="t.py",
        utility="speed",
        score_range="higher is better",
        status="completed",
        improver=ImproverOutcome(status="ok", program=program),
        baseline_score=1.0,
        best_score=1.0,
        improved=False,
        best_path=str(store.dir / "best.py"),
        diff="",
        candidates=[candidate],
        usage=usage,
        utility_uses=1,
        seconds=1.0,
    )
    store.write_record("result.json", result)
    return store.dir, result


def test_an_improve_run_shows_its_spending_on_the_original(tmp_path):
    usage = Usage(calls=2, prompt_tokens=1000, completion_tokens=500, usd=0.25, usd_cached=0.1)
    run_dir, result = _improve_run(tmp_path / "runs", usage)
    assert "Model spending: $0.2500 ($0.1000 replayed from cache)" in _text(summary(result))
    assert json.loads(result.model_dump_json())["usage"]["usd"] == 0.25  # its --json

    view = read_run(run_dir)
    (root,) = view.nodes
    assert (root.usd, root.usd_cached) == (0.25, 0.1)
    assert "spent $0.2500 ($0.1000 replayed from cache)" in _text(lineage(view))
    from stop.view.app import LineageApp

    assert "model spending, the whole run: $0.2500" in _text(LineageApp(view)._summary(root))
    assert "<td class='num usd'>$0.2500</td>" in export_html(view)

    free_dir, free = _improve_run(tmp_path / "free", Usage(calls=2))
    assert "spending" not in _text(summary(free))
    assert "$" not in _text(lineage(read_run(free_dir)))
