"""Turn the domain error hierarchy into Temporal ``ApplicationError`` types, in one place."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from temporalio.exceptions import ApplicationError

from invsaga.domain.errors import InventoryError

P = ParamSpec("P")
R = TypeVar("R")


def to_application_error(error: InventoryError) -> ApplicationError:
    return ApplicationError(
        error.message, error.to_dict(), type=error.code, non_retryable=not error.retryable
    )


def domain_errors_as_application_errors(
    fn: Callable[P, Awaitable[R]],
) -> Callable[P, Awaitable[R]]:
    """Wrap an activity so a domain error reaches the workflow typed, and non-retryable if it should be."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except InventoryError as error:
            raise to_application_error(error) from error

    return wrapper
