"""Reading a keyset-paged list up to a number of rows, for the commands that print lists."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from invsaga.domain.errors import InvalidInput
from invsaga.store.order_list import MAX_PAGE

#: More rows than an operator reads on a terminal; past it, page with --cursor.
MAX_ROWS = 100_000


class Page(Protocol):
    @property
    def items(self) -> list[Any]: ...

    @property
    def next_cursor(self) -> str | None: ...


P = TypeVar("P", bound=Page)


async def collect(
    fetch: Callable[[str | None, int], Awaitable[P]], *, limit: int, cursor: str | None = None
) -> tuple[list[Any], str | None]:
    """Up to ``limit`` rows from ``fetch(cursor, page_size)`` page after page, and the cursor after them
    (None when the list ended)."""
    if not 1 <= limit <= MAX_ROWS:
        raise InvalidInput(f"--limit must be from 1 to {MAX_ROWS}, got {limit}")
    rows: list[Any] = []
    while True:
        page = await fetch(cursor, min(MAX_PAGE, limit - len(rows)))
        rows += page.items
        cursor = page.next_cursor
        if cursor is None or len(rows) >= limit:
            return rows, cursor
