"""The `stop` command line. Only this layer turns errors into messages and exit codes."""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console
from rich.logging import RichHandler
from typer.exceptions import TyperException

from stop.errors import BadInput, StopError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Recursive self-improving code generation in the style of STOP.",
)
err_console = Console(stderr=True)


# Commands that run untrusted code: they check at start that a jail can be built.
_SANDBOXING = {"improve", "self-improve", "compare", "transfer", "bench"}


@app.callback()
def _root(
    ctx: typer.Context,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what happens."),
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
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False)],
    )
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
    from stop.cli import bench, exit, improve, lineage, lmc, self_improve, transfer  # noqa: F401


def main() -> None:
    _register()
    try:
        code = app(standalone_mode=False)
    except TyperException as exc:  # usage errors: exit code 2, like every bad input
        err_console.print(f"[red]error:[/] {exc.format_message()}", highlight=False)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("[red]interrupted[/]")
        sys.exit(130)
    except StopError as exc:
        err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2 if isinstance(exc, BadInput) else 1)
    sys.exit(code if isinstance(code, int) else 0)
