"""The stock ledger's one INSERT, for the statements that change stock.

Every change to a stock row writes its ``stock_movements`` rows in the same statement, as a
data-modifying CTE (or, for a receipt, the statement's first step). Each operation builds that insert
with ``record_movements``, so the ledger's columns and their order are written once. The one other
copy is inside ``reserve_stock`` (``schema/definitions/shard/reserve_stock.sql``): the hot path keeps
its ledger write in the function, so a worker of any release that calls it writes the ledger too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

#: The ``stock_movements.reason`` check constraint, as a type.
Reason = Literal["receive", "adjust", "import", "reserve", "release", "commit", "expire"]

_COLUMNS = "sku, location, delta_on_hand, delta_reserved, reason, reference, idempotency_key"


def record_movements(
    reason: Reason,
    *,
    rows: str,
    delta_on_hand: str,
    delta_reserved: str,
    reference: str,
    key: str,
    then: str = "",
) -> str:
    """``INSERT INTO stock_movements`` of one row per row of ``rows`` (a FROM item with ``sku`` and
    ``location`` columns); the other arguments are SQL expressions over it, ``then`` any clause after."""
    return (
        f"INSERT INTO stock_movements ({_COLUMNS})"
        f" SELECT sku, location, {delta_on_hand}, {delta_reserved}, '{reason}', {reference}, {key}"
        f" FROM {rows} {then}"
    )


_MARK = "\x00{}\x00"
_MARKS = re.compile("\x00(\\d+)\x00")


def key_sql(key: Callable[..., str], *expressions: str) -> str:
    """The SQL expression (for ``text()``) that builds ``key(*values)`` from the SQL ``expressions``
    row by row, so a key format stays written once, in ``invsaga.domain.keys``."""
    parts = _MARKS.split(key(*(_MARK.format(i) for i in range(len(expressions)))))
    literals, used = parts[0::2], [int(i) for i in parts[1::2]]
    if sorted(used) != list(range(len(expressions))):
        raise ValueError(f"{key.__name__} must use each of its arguments once, as it is")
    sql = []
    for literal, index in zip(literals, [*used, None], strict=True):
        if literal:
            # '' escapes a quote in SQL; \: keeps text() from reading ":name" inside it as a parameter.
            sql.append("'" + literal.replace("'", "''").replace(":", "\\:") + "'")
        if index is not None:
            sql.append(expressions[index])
    return " || ".join(sql)
