"""The ``invsaga`` command line. Each command group lives in its own module and is mounted here."""

from __future__ import annotations

import os
import sys
from importlib.metadata import PackageNotFoundError, version

import typer

from invsaga.cli import (
    admin,
    api,
    catalog,
    codec,
    dev,
    events,
    orders,
    payments,
    reconcile,
    saga,
    shards,
    stock_reads,
)
from invsaga.cli.errors import exit_code_for
from invsaga.domain.errors import InventoryError

app = typer.Typer(
    name="invsaga",
    help="Sharded inventory with a checkout saga on Temporal.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain click help: flags read as flags (no `<bool>`), and errors are ours to print as one line.
    rich_markup_mode=None,
)
admin.mount(app)
catalog.mount(app)
stock_reads.mount()
orders.mount(app)
saga.mount(app)
events.mount(app)
reconcile.mount(app)
payments.mount(app)
dev.mount(app)
api.mount(app)
codec.mount(app)
shards.mount(app)


DISTRIBUTION = "inventory-saga"


def installed_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        print(f"invsaga {installed_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    _version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
    ),
) -> None:
    """Sharded inventory with a checkout saga on Temporal."""


def usage_error_line(exc: typer.TyperException) -> str:
    """One line for a usage error, naming the command whose ``--help`` explains the usage."""
    message = " ".join(exc.format_message().split()).rstrip(".")
    ctx = getattr(exc, "ctx", None)
    where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return f"error: {message}{where}"


def _invoke() -> int:
    """Run the command tree; usage errors become one line on stderr and exit 2 (click's code)."""
    try:
        result = typer.main.get_command(app).main(prog_name="invsaga", standalone_mode=False)
    # typer vendors click, so its usage errors are TyperExceptions, not click.ClickExceptions.
    except typer.TyperException as exc:
        ctx = getattr(exc, "ctx", None)
        if ctx is not None and exc.format_message() == ctx.get_help():
            print(exc.format_message(), file=sys.stderr)  # a group run bare: its help is the answer
        else:
            print(usage_error_line(exc), file=sys.stderr)
        return int(getattr(exc, "exit_code", 2))
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        return 130
    # Without standalone mode click returns the code of an Exit, or the command's own return value.
    return result if isinstance(result, int) else 0


def main() -> None:
    """Entry point: every failure ends as one line on stderr and a meaningful exit code."""
    try:
        sys.exit(_invoke())
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        # The Temporal SDK's native threads can abort the interpreter at shutdown
        # (PyGILState_Release); once the command has finished there is nothing left to clean up.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    except InventoryError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        sys.exit(exit_code_for(exc))
    except Exception as exc:
        if os.environ.get("INVSAGA_DEBUG"):
            raise
        print(
            f"error: unexpected {type(exc).__name__}: {exc} (set INVSAGA_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        sys.exit(70)
