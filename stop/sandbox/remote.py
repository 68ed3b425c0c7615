"""An OpenEvolve-style evaluator and the program it scores, each in a process of its own.

An evaluator's `evaluate(program_path)` imports the program and calls it. Run in one
process, the program could reach the evaluator's frames and write its own score. So
the sandbox's init (trusted) starts the evaluator in a process of its own, with no guard
(evaluators start threads and subprocesses), and gives it, at `program_path`, a stub
module: the program's top-level functions and literal constants, where each function
call crosses to the init over a socket, runs in a fresh guarded worker
(stop/sandbox/worker.py) with the candidate's code, and comes back as plain data
(stop/sandbox/values.py). The candidate never shares a process, a folder or a
descriptor with the evaluator; what it returns is data the evaluator decodes strictly.

Standard library only: both sides run inside the sandbox.
"""

from __future__ import annotations

import ast
import json
import os
import secrets
import select
import socket
import sys
import threading
import traceback
import types
from typing import Any

from stop.sandbox import values, worker

STAGES = ("evaluate_stage1", "evaluate_stage2", "evaluate_stage3")
_MAX_LINE = 32 << 20


class CandidateError(RuntimeError):
    """The program raised (or could not run): its traceback, as the evaluator sees it."""


def score_of(metrics: dict[str, Any]) -> float | None:
    """OpenEvolve's rule: `combined_score` when it is a number, else the mean of the
    numeric metrics other than `error`; None when there are none."""
    combined = metrics.get("combined_score")
    if isinstance(combined, int | float) and not isinstance(combined, bool):
        return float(combined)
    numbers = [float(v) for k, v in metrics.items() if k != "error" and type(v) in (int, float)]
    return sum(numbers) / len(numbers) if numbers else None


def interface(source: str) -> tuple[list[str], dict[str, Any]]:
    """The program's top-level function names and literal constants, read, not run."""
    functions: list[str] = []
    constants: dict[str, Any] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            functions.append(node.name)
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                try:
                    constants[target.id] = ast.literal_eval(node.value)
                except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                    pass
    return functions, {k: v for k, v in constants.items() if k not in functions}


# --- the evaluator's side -------------------------------------------------------------


class _Link:
    """One connection to the init per process (a forked evaluator process opens its own);
    calls from the evaluator's threads take turns on it."""

    def __init__(self, address: str) -> None:
        self.address, self.pid, self.lock = address, -1, threading.Lock()
        self.sock: socket.socket | None = None
        self.file: Any = None

    def call(self, body: dict) -> dict:
        with self.lock:
            if self.pid != os.getpid():
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(self.address)
                self.file, self.pid = self.sock.makefile("rb"), os.getpid()
            assert self.sock is not None
            self.sock.sendall(json.dumps(body).encode() + b"\n")
            line = self.file.readline(_MAX_LINE)
        if not line:
            raise CandidateError("the sandbox running the program went away")
        return json.loads(line)


def bind(namespace: dict, address: str, functions: list[str], constants: dict) -> None:
    """Called by the stub: fill the stub module with the program's interface."""
    link = _Link(address)

    def remote(name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            body = {"name": name, "args": values.encode(list(args))}
            body["kwargs"] = values.encode(kwargs)
            reply = link.call(body)
            outcome, error = reply.get("outcome"), str(reply.get("error"))
            if outcome == "ok":
                return values.decode(reply.get("output"))
            if outcome == "timeout":
                raise TimeoutError(f"{name}: {error}")
            if outcome == "wrong_answer":
                raise TypeError(f"{name}: {error}")
            raise CandidateError(f"{name}: {error}")

        call.__name__ = call.__qualname__ = name
        return call

    namespace.update(constants)
    namespace.update({name: remote(name) for name in functions})


_STUB = """# Written by stop: the program under evaluation runs in a sandbox of its own, and each
# call of one of its functions runs there, in a fresh process (stop/sandbox/remote.py).
from stop.sandbox.remote import bind as _bind

_bind(globals(), {address!r}, {functions!r}, {constants!r})
"""


def _plain_metrics(result: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """A dict of metrics, or an object with `metrics` and `artifacts` (OpenEvolve's
    EvaluationResult), as JSON: numbers as floats, anything else as trimmed text."""
    metrics: Any = result
    artifacts: Any = {}
    if not isinstance(result, dict):
        metrics = getattr(result, "metrics", None)
        artifacts = getattr(result, "artifacts", None) or {}
    if not isinstance(metrics, dict) or not isinstance(artifacts, dict):
        raise TypeError(
            f"evaluate returned a {type(result).__name__}: a dict of metrics, or an "
            "object with metrics and artifacts, is what it must return"
        )

    def number(v: Any) -> Any:
        if isinstance(v, bool):
            return float(v)
        try:
            return float(v) if isinstance(v, int | float) or hasattr(v, "dtype") else str(v)[:500]
        except (TypeError, ValueError):
            return str(v)[:500]

    artifact = {
        str(k): f"<{len(v)} bytes>" if isinstance(v, bytes) else str(v)[:4000]
        for k, v in artifacts.items()
    }
    return {str(k): number(v) for k, v in metrics.items()}, artifact


def _evaluate(payload: dict, address: str) -> dict:
    """Runs in the evaluator's process: the stages, as OpenEvolve's cascade runs them."""
    folder = os.path.abspath("stop-program")  # in the process's own fresh folder
    os.makedirs(folder, exist_ok=True)
    program_path = f"{folder}/{payload['program_name']}"
    functions, constants = payload["interface"]
    with open(program_path, "w") as f:
        f.write(_STUB.format(address=address, functions=functions, constants=constants))
    path = payload["evaluator_path"]
    sys.path.insert(0, os.path.dirname(path))
    module = types.ModuleType("evaluation_module")
    module.__file__ = path
    sys.modules["evaluation_module"] = module
    exec(compile(payload["evaluator"], path, "exec"), module.__dict__)
    cascade = [name for name in STAGES if callable(getattr(module, name, None))]
    names = cascade if cascade else ["evaluate"]
    stages: list[dict] = []
    merged: dict[str, Any] = {}
    for i, name in enumerate(names):
        try:
            metrics, artifacts = _plain_metrics(getattr(module, name)(program_path))
        except BaseException as exc:  # noqa: BLE001 - the evaluator's failure is the result
            stages.append({"stage": name, "error": _traceback(exc)})
            break
        stages.append({"stage": name, "metrics": metrics, "artifacts": artifacts})
        merged.update(metrics)
        # The next stage runs only past this stage's threshold.
        thresholds = payload["thresholds"]
        passed = i < len(thresholds) and (score_of(merged) or 0.0) >= thresholds[i]
        if not passed:
            break
    return {"outcome": "ok", "stages": stages}


def _traceback(exc: BaseException) -> str:
    """The evaluator's traceback, from its own frames down (this module's left out)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))[-3000:]


def _run_evaluator(payload: dict, address: str, w: int) -> None:
    try:
        result = _evaluate(payload, address)
    except BaseException as exc:  # noqa: BLE001 - the evaluator failed to load
        result = {"outcome": "crash", "error": _traceback(exc)}
    # Flushed first: once the result is read, the init ends this process.
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    data = json.dumps(result).encode() + b"\n"
    while data:
        data = data[os.write(w, data) :]


# --- the init's side --------------------------------------------------------------------


def evaluate_job(payload: dict, chan: Any) -> dict:
    """Run the evaluator in a process of its own; answer its calls of the program, each
    in a fresh worker. Payload: program, program_name, evaluator, evaluator_path,
    thresholds, call_s (CPU seconds per call), max_reply_bytes."""
    try:
        code = compile(payload["program"], "<candidate>", "exec", dont_inherit=True)
        payload["interface"] = interface(payload["program"])
    except (SyntaxError, ValueError) as exc:
        return {"outcome": "syntax_error", "error": f"line {getattr(exc, 'lineno', '?')}: {exc}"}
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    address = f"\0stop-{secrets.token_hex(16)}"  # abstract: no file, unguessable
    listener.bind(address)
    listener.listen(16)
    r, w = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the evaluator's process
        try:
            os.close(r)
            listener.close()
            worker.become_evaluator(parent, w)
            _run_evaluator(payload, address, w)
        finally:
            os._exit(0)
    os.close(w)
    try:
        return _serve(listener, r, code, payload, chan)
    finally:
        listener.close()
        os.close(r)
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)


def _serve(listener: socket.socket, r: int, code: Any, payload: dict, chan: Any) -> dict:
    """Until the evaluator replies: accept its connections, run each call it sends."""
    functions = set(payload["interface"][0])
    calls = [0]  # the n-th call of the program is seeded n: trials differ, runs repeat
    result = bytearray()
    conns: dict[socket.socket, bytearray] = {}
    while True:
        waiting: list[Any] = [r, listener, *conns]
        ready = select.select(waiting, [], [])[0]
        if r in ready:
            chunk = os.read(r, 1 << 16)
            result += chunk
            if not chunk or b"\n" in chunk or len(result) > _MAX_LINE:
                break
        if listener in ready:
            conn, _ = listener.accept()
            conns[conn] = bytearray()
        for conn in [c for c in ready if c in conns]:
            chunk = conn.recv(1 << 16)
            if not chunk:
                conn.close()
                del conns[conn]
                continue
            buffer = conns[conn] + chunk
            *lines, rest = bytes(buffer).split(b"\n")
            conns[conn] = bytearray(rest[: _MAX_LINE + 1])
            for line in lines:
                reply = _call(line, code, functions, payload, chan, calls)
                conn.sendall(json.dumps(reply).encode() + b"\n")
    for conn in conns:
        conn.close()
    try:
        reply = json.loads(bytes(result).split(b"\n")[0])
    except ValueError:
        return {"outcome": "crash", "error": "the evaluator exited before replying"}
    return reply if isinstance(reply, dict) else {"outcome": "crash", "error": "bad reply"}


def _call(
    line: bytes, code: Any, functions: set[str], payload: dict, chan: Any, calls: list[int]
) -> dict:
    try:
        body = json.loads(line)
        name, args, kwargs = body["name"], body["args"], body["kwargs"]
    except (ValueError, KeyError, TypeError):
        return {"outcome": "crash", "error": "malformed call"}
    if name not in functions:
        return {"outcome": "crash", "error": f"the program defines no function {name!r}"}
    call = worker.run(
        code,
        name,
        [args, kwargs],
        int(payload.get("max_reply_bytes", 16 << 20)),
        timed=False,
        limit_s=float(payload["call_s"]),
        tagged=True,
        seed=calls[0],
    )
    calls[0] += 1
    for text in call.findings:
        chan.send({"type": "finding", "text": text})
    return call.reply
