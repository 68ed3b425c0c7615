"""Bad input across every command: one line on stderr that says what to fix, exit code 2,
no traceback, and nothing written where the command ran."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.helpers import FIB, run_stop


class _WebPage(BaseHTTPRequestHandler):
    """A server that answers everything with a web page, as a wrong port often does."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        page = b"<html><body>It works!</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    do_POST = do_GET


@pytest.fixture(scope="module")
def web_page():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _WebPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Files of every kind a user may hand over by mistake."""
    (tmp_path / "fib.py").write_text(FIB.read_text())
    (tmp_path / "script.json").write_text(json.dumps(["no code here"]))
    (tmp_path / "bad.json").write_text("[not json")
    (tmp_path / "empty.py").write_text("")
    (tmp_path / "syntax.py").write_text("def f(:\n")
    (tmp_path / "bin.py").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "garbage.gguf").write_bytes(b"GGUF" + bytes(range(256)) * 8)
    (tmp_path / "neither.py").write_text("x = 1\n")
    (tmp_path / "afile").write_text("a file, not a folder\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "improver_syntax.py").write_text("def improve_algorithm(:\n")
    price = {"input_per_mtok": 1.0, "output_per_mtok": 2.0, "source": "test"}
    (tmp_path / "prices_other.json").write_text(json.dumps({"other-model": price}))
    (tmp_path / "prices_negative.json").write_text(
        json.dumps({"gpt-x": price | {"output_per_mtok": -1}})
    )
    return tmp_path


S = ("--script", "script.json")  # a model that answers at once: the input is the point
# A server model that nothing answers: the input is found wrong before it is asked.
SERVER = ("--base-url", "http://127.0.0.1:9/v1", "--model", "gpt-x")

# (arguments, words the one line must contain)
SWEEP: list[tuple[tuple[str, ...], str]] = [
    # improve: files
    (("improve", *S), "--target"),
    (("improve", "--target", "missing.py", *S), "missing.py"),
    (("improve", "--target", "empty.py", *S), "empty"),
    (("improve", "--target", "bin.py", *S), "binary"),
    (("improve", "--target", "adir", *S), "not a regular file"),
    (("improve", "--target", "/dev/zero", *S), "not a regular file"),
    (("improve", "--target", "syntax.py", *S), "syntax error"),
    (("improve", "--target", "fib.py", "--utility", "nope", *S), "unknown utility"),
    (("improve", "--target", "fib.py", "--utility", "missing.py", *S), "missing.py"),
    (("improve", "--target", "fib.py", "--utility", "bin.py", *S), "binary"),
    (("improve", "--target", "fib.py", "--utility", "neither.py", *S), "defines neither"),
    (("improve", "--target", "fib.py", "--utility", "syntax.py", *S), "syntax error"),
    (("improve", "--target", "fib.py", "--improver", "nope", *S), "unknown improver"),
    (("improve", "--target", "fib.py", "--improver", "bin.py", *S), "binary"),
    (("improve", "--target", "fib.py", "--improver", "missing.py", *S), "missing.py"),
    (("improve", "--target", "fib.py", "--improver", "improver_syntax.py", *S), "syntax"),
    (("improve", "--target", "fib.py", "--improver", "zz:1", *S), "zz"),
    # improve: values
    (("improve", "--target", "fib.py", "--inputs", "[[1", *S), "--inputs"),
    (("improve", "--target", "fib.py", "--inputs", '{"a": 1}', *S), "--inputs"),
    (("improve", "--target", "fib.py", "--entry", "nope", *S), "nope"),
    (("improve", "--target", "fib.py", "--budget", "0", *S), "--budget"),
    (("improve", "--target", "fib.py", "--samples", "0", *S), "--samples"),
    (("improve", "--target", "fib.py", "--timeout", "0", *S), "--timeout"),
    (("improve", "--target", "fib.py", "--llm-budget", "abc", *S), "--llm-budget"),
    (("improve", "--target", "fib.py", "--max-tokens", "1", *S), "--max-tokens"),
    (("improve", "--target", "fib.py", "--preset", "nope", *S), "preset"),
    (("improve", "--target", "fib.py", "--utility-option", "x=1", *S), "--utility-option"),
    (("improve", "--target", "fib.py", "--utility-option", "novalue", *S), "--utility-option"),
    (("improve", "--target", "fib.py", "--backend-option", "nope=1", *S), "nope"),
    (("improve", "--target", "fib.py", "--executor", "nope", *S), "--executor"),
    (("improve", "--target", "fib.py", "--executor", "ray", *S), "--ray-address"),
    (("improve", "--target", "fib.py", "--runs-dir", "afile", *S), "--runs-dir"),
    (("improve", "--target", "fib.py", "--no-such-flag", *S), "--no-such-flag"),
    # improve: the model
    (("improve", "--target", "fib.py", "--backend", "nope"), "unknown backend"),
    (("improve", "--target", "fib.py", "--backend", "local", "--base-url", "http://x/v1"), "local"),
    (("improve", "--target", "fib.py", "--script", "missing.json"), "missing.json"),
    (("improve", "--target", "fib.py", "--script", "bad.json"), "bad.json"),
    (("improve", "--target", "fib.py", *S, "--model", "m"), "--model"),
    (("improve", "--target", "fib.py", "--base-url", "notaurl", "--model", "m"), "notaurl"),
    (
        ("improve", "--target", "fib.py", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"),
        "reach",
    ),
    (("improve", "--target", "fib.py", "--model", "garbage.gguf"), "GGUF"),
    (
        (
            "improve",
            "--target",
            "fib.py",
            "--backend",
            "openai",
            "--base-url",
            "http://127.0.0.1:9/v1",
        ),
        "reach",
    ),
    # improve: money, concurrency, resume
    (("improve", "--target", "fib.py", "--max-usd", "0", *S), "--max-usd"),
    (("improve", "--target", "fib.py", "--max-usd", "-1", *S), "--max-usd"),
    (("improve", "--target", "fib.py", "--max-usd", "1", "--prices", "bad.json", *S), "bad.json"),
    (("improve", "--target", "fib.py", "--price-input", "1", *S), "--price-output"),
    (("improve", "--target", "fib.py", "--price-input", "-1", "--price-output", "1", *S), "≥ 0"),
    (("improve", "--target", "fib.py", "--max-usd", "1", *SERVER), "no price for model gpt-x"),
    (
        (
            "improve",
            "--target",
            "fib.py",
            "--max-usd",
            "1",
            "--prices",
            "prices_other.json",
            *SERVER,
        ),
        "no price for model gpt-x",
    ),  # fmt: skip
    (("improve", "--target", "fib.py", "--prices", "prices_negative.json", *SERVER), "gpt-x"),
    (("improve", "--target", "fib.py", "--concurrency", "4", *S), "--concurrency"),
    (("improve", "--target", "fib.py", "--concurrency", "0", *S), "--concurrency"),
    (("improve", "--resume", "nope"), "no run 'nope'"),
    (("improve", "--resume", "nope", "--target", "fib.py", *S), "no run 'nope'"),
    # self-improve
    (("self-improve", "--max-usd", "0", *S), "--max-usd"),
    (("self-improve", "--max-usd", "2", *SERVER), "no price for model gpt-x"),
    (("self-improve", "--resume", "nope", "--max-usd", "2"), "no run 'nope'"),
    (("self-improve", "--tasks", ",", *S), "--tasks"),
    (("self-improve", "--tasks", "nope", *S), "unknown task"),
    (("self-improve", "--tests", "-3", *S), "--tests"),
    (("self-improve", "--tests", "0", *S), "--tests"),
    (("self-improve", "--rounds", "0", *S), "--rounds"),
    (("self-improve", "--improver", "nope", *S), "unknown improver"),
    (("self-improve", "--improver", "bin.py", *S), "binary"),
    (("self-improve", "--resume", "nope", *S), "nope"),
    (("self-improve", "--resume", "nope", "--preset", "stop-paper", *S), "--preset"),
    (("self-improve", "--preset", "nope", *S), "preset"),
    (("self-improve", "--runs-dir", "afile", *S), "--runs-dir"),
    (("self-improve", "--backend", "nope"), "unknown backend"),
    (("self-improve", "--model", "garbage.gguf"), "GGUF"),
    # reading runs
    (("lineage", "nope"), "nope"),
    (("lineage",), "run_id"),
    (("show", "nope", "1"), "nope"),
    (("show", "nope", "x"), "nope"),
    (("export", "nope", "--html", "page.html"), "nope"),
    (("view", "nope"), "nope"),
    (("delete", "nope"), "nope"),
    (("delete", "../adir"), "adir"),
    # comparing improvers
    (("transfer", "--improver", "nope", "--tasks", "parity", *S), "unknown improver"),
    (("transfer", "--improver", "seed", "--tasks", "nope", *S), "unknown task"),
    (("transfer", "--improver", "seed", "--tasks", ",", *S), "--tasks"),
    (("transfer", "--improver", "seed", "--tasks", "parity", "--max-usd", "0", *S), "--max-usd"),
    (("transfer", "--improver", "seed", "--tasks", "parity", "--trials", "0", *S), "--trials"),
    (("compare", "--improvers", "nope", "--tasks", "parity", *S), "unknown improver"),
    (("compare", "--improvers", "bin.py", "--tasks", "parity", *S), "binary"),
    (("compare", "--improvers", "seed", "--tasks", "nope", *S), "unknown task"),
    (("bench", "nope"), "nope"),
    # expert iteration and the LMC
    (("exit", "train", "--out", "afile"), "afile"),
    (("lmc", "run", "missing.lmc", "--input", "[1]"), "missing.lmc"),
    (("lmc", "run", "bin.py", "--input", "[1]"), "bin.py"),
    (("lmc", "tasks", "--count", "10000000"), "--count"),
    (("lmc", "tasks", "--family", "nope"), "nope"),
]


@pytest.mark.parametrize(("args", "words"), SWEEP, ids=[" ".join(a) for a, _ in SWEEP])
def test_bad_input_is_one_line_exit_2_and_nothing_written(workdir: Path, args, words):
    before = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
    done = run_stop(*args, cwd=workdir, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    assert words in lines[0], lines[0]
    assert "Traceback" not in done.stderr + done.stdout
    assert sorted(p.relative_to(workdir) for p in workdir.rglob("*")) == before


def test_a_web_page_is_not_a_model_server(workdir: Path, web_page: str):
    for command in (
        ("improve", "--target", "fib.py"),
        ("self-improve",),
        ("transfer", "--improver", "seed", "--tasks", "parity"),
    ):
        done = run_stop(*command, "--base-url", web_page, "--model", "m", cwd=workdir)
        assert done.returncode == 2, done.stderr
        assert "does not answer like an OpenAI-compatible server" in done.stderr
        assert not (workdir / "runs").exists()


def test_the_sweep_covers_every_command():
    assert len(SWEEP) >= 60
    covered = {args[0] for args, _ in SWEEP}
    documented = {
        "improve", "self-improve", "lineage", "show", "export", "view", "delete",
        "transfer", "compare", "bench", "exit", "lmc",
    }  # fmt: skip
    assert documented <= covered


def test_an_unexpected_failure_is_one_line_naming_its_log(tmp_path, monkeypatch, capsys):
    """A bug of stop's own (here, a command made to raise for the test) is one line that
    names the log holding its traceback, and exit code 1."""
    import sys

    from stop import cli

    def broken() -> None:
        raise ZeroDivisionError("a bug")

    cli._register()
    monkeypatch.setattr(cli.app, "registered_commands", list(cli.app.registered_commands))
    cli.app.command("broken-for-test")(broken)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["stop", "broken-for-test"])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "ZeroDivisionError: a bug" in lines[0], err
    (log,) = (tmp_path / "stop").glob("crash-*.log")
    assert str(log) in err.replace("\n", "") and "Traceback" in log.read_text()


def test_a_run_is_named_alike_in_every_json_and_can_be_deleted(tmp_path: Path, script):
    replies = str(script(["no code"]))
    improved = run_stop(
        "improve", "--target", str(FIB), "--script", replies, "--json", cwd=tmp_path
    )
    assert improved.returncode == 0, improved.stderr
    result = json.loads(improved.stdout)
    run_id, run_dir = result["run_id"], result["run_dir"]
    (row,) = json.loads(run_stop("runs", "--json", cwd=tmp_path).stdout)
    assert (row["run_id"], row["run_dir"]) == (run_id, run_dir)
    assert row["best_score"] == result["best_score"]
    lineage = json.loads(run_stop("lineage", run_id, "--json", cwd=tmp_path).stdout)
    assert (lineage["run_id"], lineage["run_dir"]) == (run_id, run_dir)

    assert (tmp_path / "runs" / ".cache").is_dir()
    deleted = run_stop("delete", run_id, cwd=tmp_path)
    assert deleted.returncode == 0 and not (tmp_path / run_dir).exists(), deleted.stderr
    cleared = run_stop("clear-cache", cwd=tmp_path)
    assert cleared.returncode == 0 and not (tmp_path / "runs" / ".cache").exists()


def test_version_and_help_alone():
    version = run_stop("--version", cwd=Path.cwd())
    assert version.returncode == 0 and version.stdout.startswith("stop ")
    alone = run_stop(cwd=Path.cwd())
    assert alone.returncode == 0 and "Commands" in alone.stdout and "error" not in alone.stderr
    completion = run_stop("--show-completion", "bash", cwd=Path.cwd())
    assert completion.returncode == 0 and "complete" in completion.stdout
