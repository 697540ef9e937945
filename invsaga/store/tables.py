"""SQLAlchemy Core tables for the statements built with Core (routing, catalog). The DDL of every table
lives in ``invsaga/store/schema/*.sql``; the stock operations are hand-written SQL in
``invsaga.store.holds`` and ``invsaga.store.levels``."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    Numeric,
    Table,
    Text,
)

core_metadata = MetaData()

# --- the core database -----------------------------------------------------------------------

slot_map = Table(
    "slot_map",
    core_metadata,
    Column("slot", Integer, primary_key=True),
    Column("shard_index", Integer, nullable=False),
)

products = Table(
    "products",
    core_metadata,
    Column("sku", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("price", Numeric(12, 2), nullable=False),
    Column("currency", Text, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    #: Bumped by every change that changes something (core_003); the compare-and-set token.
    Column("version", BigInteger, nullable=False),
)
