"""Canned model replies for Fibonacci: one good, the rest bad in every way that matters."""

MEMO = """Idea: memoize the recursion so each value is computed once.

```python
from functools import lru_cache


@lru_cache(maxsize=None)
def fib(n):
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)
```
"""
WRONG = "```python\ndef fib(n):\n    return n * 2\n```\n"
HANGING = "```python\ndef fib(n):\n    while True:\n        pass\n```\n"
SYNTAX = "```python\ndef fib(n) return n\n```\n"
PROSE = "The program is already optimal; I would not change it."
READS_ENV = (
    "```python\nimport os\n\n\ndef fib(n):\n"
    "    return os.environ.get('OPENAI_API_KEY', 'no key')"
    " + os.environ.get('STOP_TEST_SECRET', '')\n```\n"
)

ALL = [MEMO, WRONG, HANGING, SYNTAX, PROSE, READS_ENV]
