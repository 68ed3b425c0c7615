"""When two evaluations are the same: of the same program (equal once comments and layout
are set aside), by a utility with the same fingerprint (the digests below).

An improver's candidates often differ from one already scored only in a comment, a blank
line or the spacing around an operator; a deterministic utility would score them alike,
so one evaluation serves them all (stop/scoring/evalcache.py keys evaluations by
`program_key`). Sameness errs towards "different": a false "same" reuses a score the
program never earned, a false "different" only costs an evaluation.

Python: the token stream, with comments and non-logical newlines dropped and every
logical line rewritten at its block depth with single spaces between tokens. String
literals (docstrings included) are kept exactly: a docstring is reachable as `__doc__`,
and whitespace inside a string is data. A program that does not tokenize (a syntax
error) falls back to the generic form, so two copies of one broken program still match.

LMC: the machine reads whitespace-separated tokens and has no comments
(stop/lmc/machine.py `parse`), so its form is the tokens alone. Any other language:
each line's whitespace collapsed and blank lines dropped; line breaks are kept, as a
language may read them.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import io
import json
import re
import secrets
import sys
import tokenize
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import stop

# PEP 263: a comment on line 1 or 2 that names the source encoding is not a comment to
# a reader of bytes (an evaluator imports the program from a file).
_CODING = re.compile(r"^[ \t\f]*#.*?coding[:=][ \t]*[-\w.]+")

_DROPPED = {tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}
# Python 3.12 splits f-strings into tokens; the whitespace inside them is data
# (f"{x = }" prints the spaces), so an f-string is kept as its source text.
_FSTRING_START = getattr(tokenize, "FSTRING_START", None)
_FSTRING_END = getattr(tokenize, "FSTRING_END", None)


def normalized(program: str, language: str = "python") -> str:
    """`program` in a canonical form: equal forms score alike under a deterministic
    utility of that language."""
    if language == "python":
        form = _python(program)
        return form if form is not None else _generic(program)
    if language == "lmc":
        return " ".join(program.split())
    return _generic(program)


def program_key(program: str, language: str = "python") -> str:
    """The sha256 of `program`'s normalized form, its language included."""
    form = normalized(program, language)
    return hashlib.sha256(f"{language}\0{form}".encode()).hexdigest()


def same_code(first: str, second: str, language: str = "python") -> bool:
    """Whether two programs are the same code once comments, layout and docstrings are set
    aside. Not a test for reuse (a utility may read `__doc__`), but for what a timing can
    tell apart: nothing but noise separates such copies."""
    if language == "python":
        codes = _code(first), _code(second)
        if None not in codes:
            return codes[0] == codes[1]
    return normalized(first, language) == normalized(second, language)


def _code(program: str) -> str | None:
    """The syntax tree of `program` without its docstrings; None if it does not parse."""
    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError):  # ValueError: a NUL byte in the source
        return None
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):  # a body left empty reads as `pass`, as Python's must
            if body and _is_docstring(body[0]):
                body = body[1:]
            setattr(node, "body", body or [ast.Pass()])  # noqa: B010 - any node with a body
    return ast.dump(tree)


def _is_docstring(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


def _generic(program: str) -> str:
    return "\n".join(" ".join(line.split()) for line in program.splitlines() if line.strip())


def _python(program: str) -> str | None:
    """The logical lines, each at its depth; None if `program` does not tokenize."""
    source = program.splitlines(keepends=True)
    lines: list[str] = []
    words: list[str] = []
    depth = line_depth = 0
    fstring: tuple[int, int] | None = None  # where the outermost open f-string starts
    nested = 0
    try:
        for token in tokenize.generate_tokens(io.StringIO(program).readline):
            kind = token.type
            if fstring is not None:  # inside an f-string: wait for its end
                nested += (kind == _FSTRING_START) - (kind == _FSTRING_END)
                if nested == 0:
                    words.append(_span(source, fstring, token.end))
                    fstring = None
                continue
            if kind == tokenize.ERRORTOKEN:
                return None  # 3.11's tokenizer goes on past what does not compile
            if kind == tokenize.INDENT:
                depth += 1
            elif kind == tokenize.DEDENT:
                depth -= 1
            elif kind == tokenize.COMMENT:
                if token.start[0] <= 2 and not words and _CODING.match(token.string):
                    lines.append(token.string.strip())
            elif kind == tokenize.NEWLINE:
                if words:
                    lines.append("    " * line_depth + " ".join(words))
                words = []
            elif kind not in _DROPPED:
                if not words:
                    line_depth = depth
                if kind == _FSTRING_START:
                    fstring, nested = token.start, 1
                else:
                    words.append(token.string)
    except (tokenize.TokenError, SyntaxError):  # IndentationError is a SyntaxError
        return None
    if words:  # a last line without NEWLINE (not produced by a tokenizer that finishes)
        lines.append("    " * line_depth + " ".join(words))
    return "\n".join(lines)


def _span(source: list[str], start: tuple[int, int], end: tuple[int, int]) -> str:
    """The source text from `start` to `end` ((line from 1, column) pairs)."""
    (first, col), (last, end_col) = start, end
    if first == last:
        return source[first - 1][col:end_col]
    middle = "".join(source[first : last - 1])
    return source[first - 1][col:] + middle + source[last - 1][:end_col]


# --- what a utility's fingerprint is made of (Utility.fingerprint) ---------------------

# Stands for a source that cannot be read (a class typed into a REPL): unique to this
# process, so an evaluation it decided is reused within the run and never across runs.
_UNREADABLE = secrets.token_hex(8)


def digest(material: Any) -> str:
    """The sha256 of `material` as canonical JSON (numpy arrays as lists; anything else
    that is not JSON by its repr)."""
    text = json.dumps(material, sort_keys=True, default=_json_default, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy: its repr elides the middle of a large array
        return value.tolist()
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    return repr(value)


def file_digest(path: str | Path) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return f"unreadable:{_UNREADABLE}:{path}"


def source_digest(obj: Any) -> str:
    """The digest of the file that defines `obj` (a class or a function): a change to
    that file is a change to what it decides."""
    while isinstance(obj, functools.partial):
        obj = obj.func
    where = _defining_file(obj)
    if where is None:
        return f"unreadable:{_UNREADABLE}:{getattr(obj, '__qualname__', repr(obj))}"
    return file_digest(where)


def _defining_file(obj: Any) -> str | None:
    code = getattr(obj, "__code__", None)
    if code is not None:
        return code.co_filename
    module = sys.modules.get(getattr(obj, "__module__", ""))
    if getattr(module, "__file__", None):
        return module.__file__  # type: ignore[union-attr]
    # A class from a file loaded without registering its module (a user's utility
    # file): its methods know the file.
    for member in vars(obj).values() if isinstance(obj, type) else ():
        code = getattr(member, "__code__", None)
        if code is not None:
            return code.co_filename
    return None


def folder_digest(folder: Path, pattern: str = "*.py") -> str:
    """The digest of the files in `folder` that match `pattern`, names and contents."""
    files = sorted(folder.glob(pattern))
    return digest({p.name: file_digest(p) for p in files if p.is_file()})


@functools.cache
def code_version() -> str:
    """stop's version, the interpreter's, and the sources that run and judge a program:
    a change to the sandbox or to scoring makes every earlier evaluation stale."""
    root = Path(stop.__file__).parent
    return digest(
        {
            "stop": stop.__version__,
            "python": sys.version,
            "sandbox": folder_digest(root / "sandbox"),
            "scoring": folder_digest(root / "scoring"),
        }
    )


def versions(modules: Iterable[str]) -> dict[str, str | None]:
    """The installed version of each module's distribution (None for the standard
    library's): what a preloaded numpy computes may change with its version."""
    found: dict[str, str | None] = {}
    for name in sorted({m.split(".")[0] for m in modules}):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def plain(value: Any) -> bool:
    """Whether `value` is plain data (JSON's types, tuples, pydantic records): state
    whose digest is stable from run to run."""
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list | tuple):
        return all(plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    return hasattr(value, "model_dump")
