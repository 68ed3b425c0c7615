"""Hostile cases against the harness and the host protocol: exits in odd places, forged
requests and frames, odd return values, garbage on the channel, hostile model replies.
Part of the corpus (tests/hostile/corpus.py).
"""

from __future__ import annotations

from tests.hostile.case import Case, candidate, improver
from tests.hostile.programs import FAST_FIB, HANGING_FIB, MEMO_REPLY, WRONG_FIB

CANDIDATES: list[Case] = [
    # --- exits in odd places -------------------------------------------------------
    candidate(
        "os_exit_at_import",
        """
        import os

        os._exit(0)


        def fib(n):
            return n
        """,
        "crash",
        r"^exited before returning$",
    ),
    candidate(
        "raise_systemexit_at_import",
        """
        raise SystemExit(0)


        def fib(n):
            return n
        """,
        "crash",
        r"^line 1: SystemExit: 0$",
    ),
    candidate(
        "sys_exit_in_finally",
        FAST_FIB
        + """
import sys


def fib(n):
    try:
        return _fib(n)
    finally:
        sys.exit(0)
""",
        "crash",
        r"^line \d+: SystemExit: 0$",
    ),
    candidate(
        "systemexit_from_exception_str",  # fires while the harness formats the error
        """
        class Sneaky(Exception):
            def __str__(self):
                raise SystemExit(3)


        def fib(n):
            raise Sneaky()
        """,
        "crash",
        r"^line 7: __candidate__\.Sneaky: <exception str\(\) failed>$",
    ),
]

IMPROVERS: list[Case] = [
    # --- forged requests and frames ---------------------------------------------------
    improver(
        "forge_rpc_requests",
        """
        def improve_algorithm(initial_solution, utility, language_model):
            chan = utility._chan
            forged = [
                {"op": "utility", "program": initial_solution, "uses": 0, "budget": 10**9},
                {"op": "set_budget", "budget": 10**9},
                {"op": "utility", "program": 12345},
                {"op": "batch_prompt", "expertise": "x", "messages": ["y"] * 100,
                 "temperature": 0.7},
                {"op": "batch_prompt", "expertise": "x", "messages": ["y"], "temperature": "hot"},
            ] + [{"op": "utility", "program": initial_solution}] * 6
            for body in forged:
                chan.call(body)
            return initial_solution
        """,
        "ok",
        returns_initial=True,
        utility_uses=3,
        model_calls=0,
    ),
    improver(
        "forge_a_result_frame",  # the claim is re-scored like any returned program
        """
        import json, os, sys

        def improve_algorithm(initial_solution, utility, language_model):
            frame = {"type": "result", "body": {"outcome": "ok", "program": "@WRONG@"}}
            os.write(int(sys.argv[2]), (json.dumps(frame) + "\\n").encode())
            os._exit(0)
        """.replace("@WRONG@", WRONG_FIB.replace("\n", "\\n")),
        "ok",
        run_status="completed",
        utility_uses=0,
    ),
    improver(
        "forge_the_isolation_report",
        """
        def improve_algorithm(initial_solution, utility, language_model):
            utility._chan.send({"type": "confined", "isolation": ["rlimits", "netns", "forged"]})
            return initial_solution
        """,
        "crash",
        r"^sent a second isolation report$",
        checks=("isolation_genuine",),
    ),
    # --- what comes back --------------------------------------------------------------
    improver(
        "return_a_str_subclass",
        """
        class Program(str):
            pass

        def improve_algorithm(initial_solution, utility, language_model):
            return Program(initial_solution)
        """,
        "crash",
        r"^improve_algorithm returned Program$",
    ),
    improver(
        "return_a_list",
        """
        def improve_algorithm(initial_solution, utility, language_model):
            return [initial_solution]
        """,
        "crash",
        r"^improve_algorithm returned list$",
    ),
    improver(
        "return_nan",
        """
        def improve_algorithm(initial_solution, utility, language_model):
            return float("nan")
        """,
        "crash",
        r"^improve_algorithm returned float$",
    ),
    improver(
        "return_a_huge_string",
        """
        def improve_algorithm(initial_solution, utility, language_model):
            return initial_solution + "#" * (48 << 20)
        """,
        "crash",
        r"^sent a malformed or oversized message$",
        improver_timeout_s=3.0,
    ),
    improver(
        "return_a_hanging_program",  # scored by the host, times out, the original stays
        """
        def improve_algorithm(initial_solution, utility, language_model):
            return "@HANGING@"
        """.replace("@HANGING@", HANGING_FIB.replace("\n", "\\n")),
        "ok",
        run_status="completed",
    ),
    # --- exits, the channel, text that is not Unicode ---------------------------------
    improver(
        "systemexit_from_exception_str",
        """
        class Sneaky(Exception):
            def __str__(self):
                raise SystemExit(3)

        def improve_algorithm(initial_solution, utility, language_model):
            raise Sneaky()
        """,
        "crash",
        r"^line 6: __improver__\.Sneaky: <exception str\(\) failed>$",
    ),
    improver(
        "raise_systemexit_at_import",
        """
        raise SystemExit(0)

        def improve_algorithm(initial_solution, utility, language_model):
            return initial_solution
        """,
        "crash",
        r"^line 1: SystemExit: 0$",
    ),
    improver(
        "os_exit_inside",
        """
        import os

        def improve_algorithm(initial_solution, utility, language_model):
            utility(initial_solution)
            os._exit(0)
        """,
        "crash",
        r"^exited with status 0 before replying$",
        utility_uses=1,
    ),
    improver(
        "garbage_on_the_channel",
        """
        import os, sys

        def improve_algorithm(initial_solution, utility, language_model):
            os.write(int(sys.argv[2]), b"\\xff\\xfe not json\\n")
            return initial_solution
        """,
        "crash",
        r"^sent a malformed or oversized message$",
    ),
    improver(
        "score_a_lone_surrogate",
        """
        def improve_algorithm(initial_solution, utility, language_model):
            utility(initial_solution + "# \\ud800\\n")
            return initial_solution
        """,
        "crash",
        r"malformed request: .*surrogates not allowed",
        utility_uses=0,
    ),
    improver(
        "return_a_lone_surrogate",
        """
        def improve_algorithm(initial_solution, utility, language_model):
            return initial_solution + "# \\ud800\\n"
        """,
        "crash",
        r"^returned text that is not valid Unicode$",
        run_status="improver_failed",
    ),
    Case(
        "seed_improver_meets_hostile_replies",
        "improver",
        "",
        "ok",
        improver="seed",
        replies=(
            "```python\nimport os\n\n\ndef fib(n):\n    while True:\n        os.fork()\n```\n",
            "```python\ndef fib(n):\n    while True:\n        pass\n```\n",
            "```python\nimport os\n\n\ndef fib(n):\n"
            "    leaked = [v for v in os.environ.values() if 'canary' in v]\n"
            "    if leaked:\n        return leaked\n"
            "    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n```\n",
            MEMO_REPLY,
        ),
        budget=5,
        improver_timeout_s=20.0,
        improved=True,
        utility_uses=5,
        model_calls=4,
        candidate_statuses=("crash", "ok", "ok", "ok", "timeout"),
    ),
]
