"""Python values across a sandbox's pipe, as JSON: what an evaluator and the program it
scores pass each other when they run in sandboxes of their own (stop/sandbox/remote.py).

JSON alone would turn a tuple into a list and an array into nested lists, and evaluators
test for both (`isinstance(result, tuple)`). So containers other than lists carry a tag:
`{"__tuple__": [...]}`, `{"__dict__": [[key, value], ...]}`, `{"__set__": [...]}`,
`{"__bytes__": base64}`, `{"__ndarray__": nested list, "dtype": "float64"}` and
`{"__npscalar__": value, "dtype": "int64"}`. Every JSON object is a tag.

`decode` is the side that matters: it reads data from untrusted code, so it builds only
built-in values and numeric numpy arrays, never calls anything the data names, and
refuses any object it does not know. Standard library only (numpy when the data holds
arrays): it runs inside the sandbox.
"""

from __future__ import annotations

import base64
import sys
from typing import Any

_MAX_DEPTH = 64
_PLAIN = (int, float, str, bool, type(None))
_DTYPE_KINDS = "biuf"  # bool, integers, floats: data, never objects


class NotPlain(ValueError):
    """A value that cannot cross: a function, a class instance, an object array."""


def encode(value: Any, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        raise NotPlain("nested too deeply")
    t = type(value)
    if t in _PLAIN:
        return value
    if t is list:
        return [encode(v, depth + 1) for v in value]
    if t is tuple:
        return {"__tuple__": [encode(v, depth + 1) for v in value]}
    if t is dict:
        pairs = [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]
        return {"__dict__": pairs}
    if t is set or t is frozenset:
        return {"__set__": [encode(v, depth + 1) for v in value]}
    if t is bytes:
        return {"__bytes__": base64.b64encode(value).decode()}
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.ndarray | numpy.generic):
        if value.dtype.kind not in _DTYPE_KINDS:
            raise NotPlain(f"a numpy {value.dtype} value cannot be passed (numbers only)")
        tag = "__ndarray__" if isinstance(value, numpy.ndarray) else "__npscalar__"
        return {tag: value.tolist(), "dtype": value.dtype.str}
    raise NotPlain(f"a {t.__name__} cannot be passed across the sandbox (plain data only)")


def decode(data: Any, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        raise NotPlain("nested too deeply")
    t = type(data)
    if t in _PLAIN:
        return data
    if t is list:
        return [decode(v, depth + 1) for v in data]
    if t is not dict or len(data) not in (1, 2):
        raise NotPlain("malformed value")
    if set(data) == {"__tuple__"}:
        return tuple(decode(_list(data["__tuple__"]), depth + 1))
    if set(data) == {"__set__"}:
        return set(decode(_list(data["__set__"]), depth + 1))
    if set(data) == {"__dict__"}:
        pairs = decode(_list(data["__dict__"]), depth + 1)
        if not all(type(p) is list and len(p) == 2 for p in pairs):
            raise NotPlain("malformed dict")
        try:
            return {k: v for k, v in pairs}
        except TypeError as exc:  # an unhashable key
            raise NotPlain(str(exc)) from exc
    if set(data) == {"__bytes__"} and type(data["__bytes__"]) is str:
        return base64.b64decode(data["__bytes__"], validate=True)
    if set(data) in ({"__ndarray__", "dtype"}, {"__npscalar__", "dtype"}):
        import numpy

        dtype = numpy.dtype(str(data["dtype"]))
        if dtype.kind not in _DTYPE_KINDS:
            raise NotPlain(f"dtype {dtype} is not numeric")
        if "__ndarray__" in data:
            return numpy.array(_numbers(data["__ndarray__"], depth), dtype=dtype)
        return dtype.type(_numbers(data["__npscalar__"], depth))
    raise NotPlain("malformed value")


def _list(value: Any) -> list:
    if type(value) is not list:
        raise NotPlain("malformed value")
    return value


def _numbers(value: Any, depth: int) -> Any:
    """An array's data: numbers in nested lists, nothing else."""
    if depth > _MAX_DEPTH:
        raise NotPlain("nested too deeply")
    if type(value) is list:
        return [_numbers(v, depth + 1) for v in value]
    if type(value) in (int, float, bool):
        return value
    raise NotPlain("an array holds something other than numbers")
