"""Every stock operation, one method each, on one ``StockStore``: the life of a hold
(``invsaga.store.holds``) and the stock row itself (``invsaga.store.levels``). Each is one statement or
one short transaction, is idempotent by key, and writes its ledger rows in the same transaction as the
change they record (``invsaga.store.ledger``).

Lock order is global: stock rows first, in (sku, location) order, then reservation rows. Any operation
that touches several stock rows takes their locks in that order up front, so none can deadlock.
"""

from __future__ import annotations

from invsaga.store.holds import HoldStore
from invsaga.store.levels import LevelStore, check_quantity

__all__ = ["StockStore", "check_quantity"]


class StockStore(HoldStore, LevelStore):
    """Stock operations over the sharded inventory. Stateless apart from its engines."""
