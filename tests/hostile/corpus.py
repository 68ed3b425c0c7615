"""The hostile corpus: candidate programs and improvers that try to escape, cheat or crash
the host, each with the outcome it must get. Pure data; tests/test_hostile.py runs it.

A *candidate* is a program defining `fib(n)`, scored by the speed utility on the
workload of examples/fib.py; `status` is its evaluation's status and `detail` a regular
expression its detail must match. An *improver* defines `improve_algorithm(...)` and is
run by `stop.improve.improve` with a scripted model answering `replies`; `status` is the
improver outcome's status, `detail` a regular expression for its error, and the other
fields say what must hold of the run.

Where the same attempt is refused by either of two layers (the sandbox's own user id,
resource limits and network namespace; or the in-process guard that blocks attempts
early), `detail` names both refusals, e.g. `BlockingIOError|blocked by the stop sandbox`.
Cases that must reach the outer walls first switch the guard off (`UNGUARD`): it is a
Python audit hook whose tables the code it watches can reach.

Placeholders, replaced by the test before a case runs (see `render`):
@TMP_CANARY@   a root-owned, world-readable file in /tmp that must not change
@SECRET_FILE@  a root-owned file in /tmp, mode 0600, holding the secret
@HOST_CANARY@  a file in the test's private temporary directory
@HOST_DIR@     that directory
@SHARED_DIR@   a world-writable sticky directory in /tmp (like /tmp/.X11-unix)
@PORT@         a TCP port on 127.0.0.1 where the host listens
@RUNS_DIR@     the run store, readable by others (as a project's runs/ usually is)
@TAG@          a name unique to this run of the case

The cases live in parts, by what they attack: exhaustion.py (hangs, processes, memory,
disk, output), protocol.py (the harness and the host protocol), processes.py (signals,
daemons), escapes.py (secrets, the file system, the network) and forgery.py (forged
results, times and budgets); case.py defines `Case`, programs.py the shared fragments.

For demos: `python -m tests.hostile.corpus list`, or `python -m tests.hostile.corpus
write DIR` to write every case as a file (`stop improve --improver
DIR/improver_<name>.py`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.hostile import escapes, exhaustion, forgery, processes, protocol
from tests.hostile.case import Case
from tests.hostile.programs import MEMO_REPLY

__all__ = [
    "CANDIDATES",
    "CASES",
    "IMPROVERS",
    "MEMO_REPLY",
    "PROBES",
    "Case",
    "render",
]

# Files the cases try to create outside the sandbox: none may exist afterwards.
PROBES = (
    "/stop-hostile-probe",
    "/etc/stop-hostile-probe",
    "/root/stop-hostile-probe",
    "/usr/stop-hostile-probe",
)


_PARTS = (exhaustion, protocol, processes, escapes, forgery)

CANDIDATES: list[Case] = [case for part in _PARTS for case in part.CANDIDATES]
IMPROVERS: list[Case] = [case for part in _PARTS for case in part.IMPROVERS]
CASES = CANDIDATES + IMPROVERS


def render(source: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        source = source.replace(f"@{key}@", value)
    return source


DEMO_VALUES = {
    "TMP_CANARY": "/tmp/stop-hostile-canary",
    "SECRET_FILE": "/tmp/stop-hostile-secret",
    "HOST_CANARY": "/tmp/stop-hostile-host/canary.txt",
    "HOST_DIR": "/tmp/stop-hostile-host",
    "SHARED_DIR": "/tmp/stop-hostile-shared",
    "PORT": "9",
    "RUNS_DIR": "runs",
    "TAG": "demo",
}


def main(argv: list[str]) -> int:
    if argv[:1] == ["list"]:
        for case in CASES:
            print(f"{case.kind:9} {case.name:40} {case.status:12} {case.detail or ''}")
        return 0
    if argv[:1] == ["write"] and len(argv) == 2:
        out = Path(argv[1])
        out.mkdir(parents=True, exist_ok=True)
        for case in CASES:
            if case.source:
                (out / f"{case.kind}_{case.name}.py").write_text(render(case.source, DEMO_VALUES))
        print(f"wrote {sum(1 for c in CASES if c.source)} files to {out}")
        return 0
    print("usage: python -m tests.hostile.corpus list | write DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
