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


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what happens.")) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False)],
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
