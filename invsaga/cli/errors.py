"""Map the one domain error hierarchy to CLI exit codes and a single readable line, once."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import typer

from invsaga.domain import errors

T = TypeVar("T")

# sysexits-style codes, so scripts can tell "your input" from "try again later".
EXIT_CODES: dict[type[errors.InventoryError], int] = {
    errors.InvalidInput: 2,
    errors.UnknownSku: 3,
    errors.UnknownProduct: 3,
    errors.ProductNotFound: 3,
    errors.OrderNotFound: 3,
    errors.ProductExists: 5,
    errors.OutOfStock: 4,
    errors.VersionConflict: 5,
    errors.BelowReserved: 5,
    errors.ReservationClosed: 5,
    errors.IdempotencyKeyConflict: 5,
    errors.OrderIdReused: 5,
    errors.MoveRefused: 5,
    errors.PaymentDeclined: 6,
    errors.ShardUnavailable: 69,
    errors.PaymentUnavailable: 69,
    errors.SchemaMismatch: 78,
    errors.ConfigurationError: 78,
}


def exit_code_for(error: errors.InventoryError) -> int:
    for cls in type(error).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return 1


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one line to stderr and return the Exit to raise."""
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine, turning domain errors into one line and an exit code."""
    try:
        return asyncio.run(coro)
    except errors.InventoryError as exc:
        raise fail(exc.message, exit_code_for(exc)) from None
    except KeyboardInterrupt:
        raise fail("interrupted", 130) from None
