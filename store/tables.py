"""SQLAlchemy Core tables, defined once. The DDL that creates them lives in ``store.migrations``."""

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
from sqlalchemy.dialects.postgresql import JSONB

shard_metadata = MetaData()
core_metadata = MetaData()

# --- every inventory shard -------------------------------------------------------------------

stock_levels = Table(
    "stock_levels",
    shard_metadata,
    Column("sku", Text, primary_key=True),
    Column("location", Text, primary_key=True),
    Column("on_hand", BigInteger, nullable=False),
    Column("reserved", BigInteger, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

reservations = Table(
    "reservations",
    shard_metadata,
    Column("id", BigInteger, primary_key=True),
    Column("order_id", Text, nullable=False),
    Column("sku", Text, nullable=False),
    Column("location", Text, nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("state", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

stock_movements = Table(
    "stock_movements",
    shard_metadata,
    Column("id", BigInteger, primary_key=True),
    Column("sku", Text, nullable=False),
    Column("location", Text, nullable=False),
    Column("delta_on_hand", BigInteger, nullable=False),
    Column("delta_reserved", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("reference", Text, nullable=False),
    Column("idempotency_key", Text, nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

shard_identity = Table(
    "shard_identity",
    shard_metadata,
    Column("singleton", Boolean, primary_key=True),
    Column("shard_index", Integer, nullable=False),
)

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
)

orders = Table(
    "orders",
    core_metadata,
    Column("order_id", Text, primary_key=True),
    Column("customer_id", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("amount", Numeric(12, 2), nullable=False),
    Column("currency", Text, nullable=False),
    Column("lines", JSONB, nullable=False),
    Column("reason", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
