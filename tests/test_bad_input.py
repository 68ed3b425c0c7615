"""Bad input: one line on stderr, exit code 2, no traceback, no run directory."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.helpers import FIB, run_stop


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    broken = tmp / "broken.py"
    broken.write_text("def fib(n)\n    return n\n")
    two = tmp / "two.py"
    two.write_text("def a(n):\n    return n\n\n\ndef b(n):\n    return n\n")
    binary = tmp / "binary.py"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    empty = tmp / "empty.py"
    empty.write_text("\n\n")
    nul = tmp / "nul.py"
    nul.write_bytes(b"def fib(n):\n    return n\x00\n")
    huge = tmp / "huge.py"
    huge.write_text("x = 1\n" * ((10 << 20) // 6))  # 10 MB
    fails = tmp / "fails.py"
    fails.write_text("def fails(n):\n    raise ValueError('nope')\n")
    return {
        "missing target": (["--target", str(tmp / "nope.py")], "no such target file"),
        "unreadable target": (["--target", str(binary)], "binary file"),
        "empty target": (["--target", str(empty)], "is empty"),
        "binary target": (["--target", str(nul)], "binary file"),
        "enormous target": (["--target", str(huge)], "larger than 1 MiB"),
        "syntax error": (["--target", str(broken)], "syntax error at line 1"),
        "unknown utility": (["--target", str(FIB), "--utility", "sped"], "unknown utility 'sped'"),
        "missing entry": (["--target", str(FIB), "--entry", "fob"], "--entry fob"),
        "ambiguous entry": (["--target", str(two), "--inputs", "[[1]]"], "pass --entry"),
        "malformed inputs": (
            ["--target", str(FIB), "--inputs", "[[1]"],
            "--inputs is not valid JSON",
        ),
        "inputs not lists": (
            ["--target", str(FIB), "--inputs", "[1, 2]"],
            "list of argument lists",
        ),
        "no inputs": (["--target", str(two), "--entry", "a"], "no workload"),
        "original fails": (["--target", str(fails), "--inputs", "[[1]]"], "fails on its inputs"),
        "unknown improver": (["--target", str(FIB), "--improver", "nope"], "unknown improver"),
        "unknown generation": (["--target", str(FIB), "--improver", "nope:3"], "no run 'nope'"),
        "unreachable base url": (
            [
                "--target",
                str(FIB),
                "--base-url",
                f"http://127.0.0.1:{_free_port()}/v1",
                "--model",
                "m",
            ],
            "cannot reach --base-url",
        ),
        "bad flag value": (["--target", str(FIB), "--budget", "0"], "--budget"),
    }


CASES = [
    "missing target",
    "unreadable target",
    "empty target",
    "binary target",
    "enormous target",
    "syntax error",
    "unknown utility",
    "missing entry",
    "ambiguous entry",
    "malformed inputs",
    "inputs not lists",
    "no inputs",
    "original fails",
    "unknown improver",
    "unknown generation",
    "unreachable base url",
    "bad flag value",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_exit_2(case, tmp_path):
    args, expected = _cases(tmp_path)[case]
    runs = tmp_path / "runs"
    proc = run_stop("improve", *args, "--runs-dir", str(runs), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert expected in lines[0]
    assert proc.stdout == ""
    assert not runs.exists(), "nothing may be written for bad input"
