"""Which of a shard's rows are its own while slots move (``slot_fences``, shard_006).

During a move the target holds a copy of the moving slots (state ``importing``) and, until the mover
deletes them, the source keeps the rows of slots that left (``moved_out``). Neither is the shard's:
a read that sums or checks a shard (the audit, the reconciler's evidence, the sweeper) reads through
these, so a slot is counted on exactly the shard that serves it.
"""

from __future__ import annotations

#: The slots whose rows here belong to another shard.
_NOT_HERE = "SELECT slot FROM slot_fences WHERE state IN ('importing', 'moved_out')"

#: ``stock_levels`` as its owner sees it: a FROM item (give it an alias).
OWNED_STOCK = f"(SELECT * FROM stock_levels WHERE slot IS NULL OR slot NOT IN ({_NOT_HERE}))"


def owned(table: str) -> str:
    """``table`` (``reservations`` or ``stock_movements``) without the rows of slots not served here:
    a FROM item (give it an alias). Their slot is their stock row's."""
    return (
        f"(SELECT t.* FROM {table} t WHERE NOT EXISTS (SELECT 1 FROM stock_levels o"
        f" WHERE o.sku = t.sku AND o.location = t.location AND o.slot IN ({_NOT_HERE})))"
    )


OWNED_HOLDS = owned("reservations")
OWNED_LEDGER = owned("stock_movements")
