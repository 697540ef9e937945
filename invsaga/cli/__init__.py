"""The ``invsaga`` command line. Each command group lives in its own module and is mounted here."""

from __future__ import annotations

import os
import sys

import typer

from invsaga.cli import admin, api, codec, dev, payments, reconcile, saga
from invsaga.cli.errors import exit_code_for
from invsaga.domain.errors import InventoryError

app = typer.Typer(
    name="invsaga",
    help="Sharded inventory with a checkout saga on Temporal.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
admin.mount(app)
saga.mount(app)
reconcile.mount(app)
payments.mount(app)
dev.mount(app)
api.mount(app)
codec.mount(app)


def main() -> None:
    """Entry point: every failure ends as one line on stderr and a meaningful exit code."""
    try:
        app()
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
