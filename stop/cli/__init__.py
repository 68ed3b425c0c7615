"""The `stop` command line. Only this layer turns errors into messages and exit codes."""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import typer
from rich.console import Console
from rich.logging import RichHandler
from typer._click.exceptions import NoArgsIsHelpError  # typer vendors click
from typer.exceptions import TyperException

from stop.errors import BadInput, Interrupted, StopError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish
    pretty_exceptions_enable=False,
    help="Recursive self-improving code generation in the style of STOP.",
)
err_console = Console(stderr=True)


# Commands that run untrusted code: they check at start that a jail can be built.
_SANDBOXING = {"improve", "self-improve", "compare", "transfer", "bench"}


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"stop {version('stop')}")
        except PackageNotFoundError:
            typer.echo("stop (not installed: run scripts/setup)")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Debug logs of what stop does, on stderr."
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
    weak_sandbox: bool = typer.Option(
        False,
        "--weak-sandbox",
        envvar="STOP_WEAK_SANDBOX",
        help="Where no jail can be built (no user namespaces), run untrusted code anyway, "
        "with limits and namespaces where they can be had: it can read your files. "
        "Recorded in the run.",
    ),
) -> None:
    logging.basicConfig(
        level=logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False)],
    )
    # -v: stop's own debug logs; other libraries' stay at warnings.
    logging.getLogger("stop").setLevel(logging.DEBUG if verbose else logging.WARNING)
    from stop.sandbox import jail

    jail.weak_allowed = weak_sandbox
    if ctx.invoked_subcommand in _SANDBOXING and jail.sandbox_kind() == "weak":
        err_console.print(
            "[yellow]warning:[/] weak sandbox: no jail can be built here "
            f"({jail.unavailable()}); untrusted code can read your files",
            highlight=False,
            soft_wrap=True,
        )


def _register() -> None:
    # Command modules are small and import their heavy parts inside the commands.
    from stop.cli import (  # noqa: F401
        bench,
        exit,
        improve,
        lineage,
        lmc,
        manage,
        self_improve,
        transfer,
    )


def _interrupt(signum: int, frame: object) -> None:
    """Ctrl-C: end the running sandboxes first, so that nothing waits on them, then stop."""
    from stop.sandbox import runner

    runner.stop_all()
    raise KeyboardInterrupt


def main() -> None:
    _register()
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not ignored
        signal.signal(signal.SIGINT, _interrupt)
    try:
        code = app(standalone_mode=False)
    except NoArgsIsHelpError:  # `stop` alone (or a group alone): the help was the answer
        sys.exit(0)
    except TyperException as exc:  # usage errors: exit code 2, like every bad input
        err_console.print(f"[red]error:[/] {exc.format_message()}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        code = 130
    except Interrupted as exc:
        err_console.print(f"[yellow]interrupted:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(130)
    except StopError as exc:
        err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2 if isinstance(exc, BadInput) else 1)
    except Exception as exc:  # noqa: BLE001 - a bug of ours: one line, the rest in a log
        where = _crash_log(exc)
        err_console.print(
            f"[red]error:[/] stop failed unexpectedly ({type(exc).__name__}: {exc}); "
            f"the traceback is in {where}",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
    if code == 130:  # typer turns Ctrl-C outside a run into this code
        err_console.print("[yellow]interrupted[/]", highlight=False)
    sys.exit(code if isinstance(code, int) else 0)


def _crash_log(exc: Exception) -> Path:
    """Write the traceback of an unexpected failure where the user can find it."""
    text = "".join(traceback.format_exception(exc))
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    for folder in (state / "stop", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(f"stop {' '.join(sys.argv[1:])}\n{text}")
            return folder / name
        except OSError:
            continue
    return Path("(nowhere: no folder could be written)")
