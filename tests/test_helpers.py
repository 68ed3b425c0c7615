"""extract_code: the helper improvers use to pull code out of model replies."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stop.helpers import extract_code

SHORT = "x = 1"
LONG = "def f(x):\n    return x * 2"


def fenced(code: str, tag: str = "python") -> str:
    return f"```{tag}\n{code}\n```\n"


def test_picks_the_largest_block() -> None:
    reply = f"First:\n{fenced(SHORT)}Better:\n{fenced(LONG)}Also:\n{fenced('y = 2')}"
    assert extract_code(reply) == LONG
    reply = f"{fenced(LONG)}then\n{fenced(SHORT)}"
    assert extract_code(reply) == LONG


def test_python_and_bare_fences() -> None:
    assert extract_code("Here you go:\n" + fenced(LONG)) == LONG
    assert extract_code("Here you go:\n" + fenced(LONG, tag="")) == LONG
    assert extract_code(fenced(SHORT, tag="") + "and\n" + fenced(LONG)) == LONG


@pytest.mark.parametrize("tag", ["py", "python3", "c++", "objective-c", " python ", "\tpython"])
def test_other_tags_and_spacing(tag: str) -> None:
    assert extract_code(fenced(LONG, tag=tag)) == LONG


def test_unterminated_final_block_counts() -> None:
    assert extract_code("Sure:\n```python\n" + LONG) == LONG
    assert extract_code("Sure:\n```python\n" + LONG + "\n\n") == LONG
    # a finished short block, then a longer one cut off by the token limit
    assert extract_code(fenced(SHORT) + "```python\n" + LONG) == LONG
    # the cut-off one is shorter: the finished block wins
    assert extract_code(fenced(LONG) + "```python\n" + SHORT) == LONG


def test_strips_blank_lines_but_keeps_indentation() -> None:
    assert extract_code("```python\n\n\n    x = 1\n    y = 2\n\n```") == "    x = 1\n    y = 2"


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "The program is already optimal; I would not change it.",
        "Use `fib(n)` with `lru_cache`, inline code is not a block.",
        "```python\n```",
        "```python\n\n   \n```\n",
        "Run ```python fib.py``` to check.",
    ],
    ids=["empty", "prose", "inline-code", "empty-block", "blank-block", "fence-mid-line"],
)
def test_no_block_gives_none(reply: str) -> None:
    assert extract_code(reply) is None


def test_empty_block_is_skipped_for_a_real_one() -> None:
    assert extract_code("```python\n```\n" + fenced(SHORT)) == SHORT


def test_list_form_drops_replies_without_code() -> None:
    replies = [
        fenced(LONG),
        "no code here",
        f"{fenced(SHORT)}and\n{fenced(LONG)}",
        "",
        fenced(SHORT),
    ]
    assert extract_code(replies) == [LONG, LONG, SHORT]
    assert extract_code(["prose only"]) == []
    assert extract_code([]) == []


# Carriage returns are left out: CRLF line ends are normalised (see the CRLF test).
NO_BACKTICKS = st.text(alphabet=st.characters(blacklist_characters="`\r"))


@given(before=NO_BACKTICKS, code=NO_BACKTICKS, after=NO_BACKTICKS)
def test_fenced_code_in_prose_is_extracted_exactly(before: str, code: str, after: str) -> None:
    reply = f"{before}\n```python\n{code}\n```\n{after}"
    stripped = code.strip("\n")
    # The helper strips only the newlines around a block, and ignores blank blocks.
    expected = stripped if stripped.strip() else None
    assert extract_code(reply) == expected


@given(
    before=NO_BACKTICKS,
    first=NO_BACKTICKS.filter(str.strip),
    middle=NO_BACKTICKS,
    second=NO_BACKTICKS.filter(str.strip),
)
def test_the_longest_of_two_blocks_wins(before: str, first: str, middle: str, second: str) -> None:
    reply = f"{before}\n```python\n{first}\n```\n{middle}\n```\n{second}\n```"
    one, two = first.strip("\n"), second.strip("\n")
    expected = one if len(one) >= len(two) else two
    assert extract_code(reply) == expected
    assert extract_code([reply, before, reply]) == [expected, expected]


def test_crlf_line_ends_are_understood() -> None:
    assert extract_code("Here:\r\n```python\r\nx = 1\r\ny = 2\r\n```\r\n") == "x = 1\ny = 2"


def test_indented_fence_in_a_markdown_list() -> None:
    assert extract_code("1. Do this:\n  ```python\n  x = 1\n  ```\n") == "  x = 1"
