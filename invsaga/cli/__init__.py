"""The ``invsaga`` command line. Each command group lives in its own module and is mounted here."""

from __future__ import annotations

import typer

from invsaga.cli import admin

app = typer.Typer(
    name="invsaga",
    help="Sharded inventory with a checkout saga on Temporal.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
admin.mount(app)


def main() -> None:
    app()
