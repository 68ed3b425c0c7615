"""What a run's model calls cost in US dollars, for `--max-usd` and for the spending the
views show.

A price is USD per million tokens, input (prompt) and output (completion) apart, as the
hosted APIs publish theirs. Prices come from, in this order:

1. `--price-input` and `--price-output` (both, or neither);
2. a prices file the user names (`--prices FILE`), which replaces the shipped one;
3. for the embedded model and the scripted one, nothing: they cost 0;
4. the shipped file, stop/llm/prices.json.

A prices file is a small JSON object mapping a model's name, as the run names it
(`--model`), to its price and where that figure comes from and when:

    {
      "my-model": {
        "input_per_mtok": 0.15,
        "output_per_mtok": 0.60,
        "source": "the provider's pricing page, read 2025-01-31"
      }
    }

The shipped file is empty: a price goes stale and differs by provider, and a figure that
cannot be traced to the provider's own page on a known date would make a cap a guess.
Users write their own file (or pass the flags) for the model they pay for.
"""

from __future__ import annotations

import json
import logging
import math
from importlib import resources
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from stop.errors import BadInput
from stop.records import Prices

log = logging.getLogger(__name__)

TOKENS_PER_PRICE = 1_000_000  # prices are per million tokens
FREE_BACKENDS = frozenset({"local", "scripted"})  # run here: no one bills them
SHIPPED = "prices.json"  # beside this module


NO_CHARGE = Prices(input_per_mtok=0, output_per_mtok=0, source="local: no charge")

_TABLE = TypeAdapter(dict[str, Prices])


def cost(prices: Prices, prompt_tokens: int, completion_tokens: int) -> float:
    """USD of one completion's tokens."""
    return (
        prompt_tokens * prices.input_per_mtok + completion_tokens * prices.output_per_mtok
    ) / TOKENS_PER_PRICE


def estimate(prices: Prices, *, requests: int, prompt_tokens_each: int, max_tokens: int) -> float:
    """The most a run could cost: every one of its `requests` completions sends
    `prompt_tokens_each` and gets a reply of `max_tokens` (an upper bound: replies stop
    early, and a server that bills a shared prompt once bills less)."""
    return requests * cost(prices, prompt_tokens_each, max_tokens)


def load_prices_file(path: Path) -> dict[str, Prices]:
    """A prices file's table (model name -> Prices); BadInput, in one line naming the
    file, where it cannot be read or is not one."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"prices file {path} does not exist") from None
    except IsADirectoryError:
        raise BadInput(f"prices file {path} is a directory") from None
    except UnicodeDecodeError:
        raise BadInput(f"prices file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise BadInput(f"cannot read prices file {path} ({exc.strerror or exc})") from exc
    return _parse(text, str(path))


def _parse(text: str, name: str) -> dict[str, Prices]:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise BadInput(f"prices file {name} is not JSON: {exc.msg} ({where})") from None
    if not isinstance(raw, dict):
        raise BadInput(
            f"prices file {name} must be a JSON object mapping model names to "
            f"{{input_per_mtok, output_per_mtok, source}}, not a {type(raw).__name__}"
        )
    try:
        return _TABLE.validate_python(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise BadInput(f"prices file {name}: {where}: {first['msg']}") from None


def shipped_prices() -> dict[str, Prices]:
    """The table shipped with stop; empty where the package was built without it."""
    resource = resources.files("stop.llm").joinpath(SHIPPED)
    if not resource.is_file():
        log.debug("no shipped %s: no shipped prices", SHIPPED)
        return {}
    return _parse(resource.read_text(encoding="utf-8"), f"stop/llm/{SHIPPED}")


def resolve_prices(
    model_name: str | None,
    *,
    backend: str,
    input_per_mtok: float | None,
    output_per_mtok: float | None,
    prices_file: Path | None,
    required: bool,
) -> Prices | None:
    """The prices of the model a run uses (see the module's docstring for the order);
    None where none is known and none is `required` (no --max-usd): the run then counts
    tokens, not money. BadInput for half the flags, a negative one, an unreadable or
    malformed prices file, or (when `required`) a model with no price."""
    if input_per_mtok is not None or output_per_mtok is not None:
        if input_per_mtok is None or output_per_mtok is None:
            raise BadInput(
                "--price-input and --price-output go together: give both (USD per million tokens)"
            )
        for flag, value in (("--price-input", input_per_mtok), ("--price-output", output_per_mtok)):
            if not (math.isfinite(value) and value >= 0):
                raise BadInput(f"{flag} must be a finite number ≥ 0 (USD per million tokens)")
        return Prices(
            input_per_mtok=input_per_mtok, output_per_mtok=output_per_mtok, source="flags"
        )
    # A file the user names is read (and refused if malformed) whatever the backend.
    table = load_prices_file(prices_file) if prices_file is not None else None
    if table is not None and model_name is not None and model_name in table:
        return table[model_name]
    if backend in FREE_BACKENDS:
        return NO_CHARGE
    if table is None:
        table = shipped_prices()
        if model_name is not None and model_name in table:
            return table[model_name]
    if required:
        model = model_name or f"of the {backend} backend"
        raise BadInput(
            f"no price for model {model}: pass --price-input and --price-output "
            "(USD per million tokens) or a --prices file"
        )
    return None


def usd(amount: float) -> str:
    """A sum of money as the views print it: "$0.0123", "$12.35"; a sum too small
    for four decimals still reads as spent."""
    if 0 < amount < 0.00005:
        return "<$0.0001"
    return f"${amount:,.2f}" if amount >= 100 else f"${amount:.4f}"


def spending(total: float, cached: float) -> str | None:
    """A run's or a generation's spending as the views print it: "$0.0123", or
    "$0.0123 ($0.0040 replayed from cache)"; None where nothing was charged (no prices,
    or only free models), so that such runs show no money at all."""
    if total <= 0:
        return None
    if cached > 0:
        return f"{usd(total)} ({usd(cached)} replayed from cache)"
    return usd(total)
