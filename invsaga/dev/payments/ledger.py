"""The sandbox provider's own Postgres tables and every statement it runs on them.

Idempotency is enforced by unique keys and ``INSERT ... ON CONFLICT``, never by a read-then-write in
Python, so concurrent identical requests and several sandbox processes still make exactly one charge.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Row,
    Table,
    Text,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.schema import CreateIndex, CreateTable

from invsaga.payments.models import Charge, ChargeRequest, ChargeStatus, Refund, RefundRequest, Void
from invsaga.payments.problems import (
    CHARGE_KEY_VOIDED,
    CHARGE_NOT_FOUND,
    CHARGE_NOT_REFUNDABLE,
    IDEMPOTENCY_KEY_REUSED,
    REFUND_EXCEEDS_CHARGE,
    Rejected,
)

_SCHEMA_LOCK = 0x5A7D0C  # pg_advisory_xact_lock key: concurrent sandboxes must not race on CREATE TABLE

metadata = MetaData()

charges = Table(
    "charges",
    metadata,
    Column("id", Text, primary_key=True),
    Column("idempotency_key", Text, nullable=False, unique=True),
    Column("status", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("token", Text, nullable=False),
    Column("reference", Text, nullable=False),
    Column("refunded_amount", BigInteger, nullable=False, server_default=text("0")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("status IN ('succeeded', 'declined')", name="charges_status"),
    CheckConstraint("amount > 0", name="charges_amount_positive"),
    CheckConstraint("refunded_amount >= 0 AND refunded_amount <= amount", name="charges_refund_within"),
    CheckConstraint("status = 'succeeded' OR refunded_amount = 0", name="charges_refund_only_succeeded"),
)

refunds = Table(
    "refunds",
    metadata,
    Column("id", Text, primary_key=True),
    Column("idempotency_key", Text, nullable=False, unique=True),
    Column("charge_id", Text, ForeignKey("charges.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("amount > 0", name="refunds_amount_positive"),
    Index("refunds_by_charge", "charge_id"),
)

#: Charge keys that may never charge again: the caller gave up on the charge (a "technical cancel").
voided_keys = Table(
    "voided_keys",
    metadata,
    Column("idempotency_key", Text, primary_key=True),
    Column("voided_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

#: Attempts per charge idempotency key, counted durably so ``tok_flaky_<N>`` holds across processes.
charge_attempts = Table(
    "charge_attempts",
    metadata,
    Column("idempotency_key", Text, primary_key=True),
    Column("attempts", Integer, nullable=False),
    Column("last_attempt_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _charge(row: Row[Any]) -> Charge:
    return Charge.model_validate(row._mapping)


def _refund(row: Row[Any]) -> Refund:
    return Refund.model_validate(row._mapping)


def _reused(key: str) -> Rejected:
    return Rejected(IDEMPOTENCY_KEY_REUSED, f"Idempotency-Key {key!r} was first used with another body")


class Ledger:
    """Charges, refunds and attempt counts in the sandbox's database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @classmethod
    async def open(cls, url: URL, *, pool_size: int = 10) -> Ledger:
        engine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size * 2,
            connect_args={"timeout": 5, "server_settings": {"application_name": "invsaga-payment-sandbox"}},
        )
        ledger = cls(engine)
        try:
            await ledger.create_schema()
        except BaseException:
            await engine.dispose()
            raise
        return ledger

    async def close(self) -> None:
        await self._engine.dispose()

    async def create_schema(self) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
            for table in metadata.sorted_tables:
                await conn.execute(CreateTable(table, if_not_exists=True))
                for index in table.indexes:
                    await conn.execute(CreateIndex(index, if_not_exists=True))

    async def ping(self) -> None:
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def count_attempt(self, key: str) -> int:
        """Record one more attempt for ``key`` and return how many there have been, this one included."""
        statement = (
            insert(charge_attempts)
            .values(idempotency_key=key, attempts=1)
            .on_conflict_do_update(
                index_elements=[charge_attempts.c.idempotency_key],
                set_={"attempts": charge_attempts.c.attempts + 1, "last_attempt_at": func.now()},
            )
            .returning(charge_attempts.c.attempts)
        )
        async with self._engine.begin() as conn:
            return int((await conn.execute(statement)).scalar_one())

    async def record_charge(
        self, key: str, request: ChargeRequest, status: ChargeStatus
    ) -> tuple[Charge, bool]:
        """Store the charge unless ``key`` already has one; return the stored charge and whether it was."""
        statement = (
            insert(charges)
            .values(id=_new_id("ch"), idempotency_key=key, status=status.value, **request.model_dump())
            .on_conflict_do_nothing(index_elements=[charges.c.idempotency_key])
            .returning(*charges.c)
        )
        async with self._engine.begin() as conn:
            await _lock_key(conn, key)
            if await conn.scalar(
                select(voided_keys.c.idempotency_key).where(voided_keys.c.idempotency_key == key)
            ):
                raise Rejected(CHARGE_KEY_VOIDED, f"Idempotency-Key {key!r} was voided: nothing was charged")
            row = (await conn.execute(statement)).first()
            if row is not None:
                return _charge(row), False
            # ON CONFLICT waited for the first insert to commit, so this statement's snapshot sees it.
            existing = _charge(
                (await conn.execute(select(charges).where(charges.c.idempotency_key == key))).one()
            )
        if not existing.same_request(request):
            raise _reused(key)
        return existing, True

    async def void_key(self, key: str) -> Void:
        """Void ``key`` so no charge can be made with it any more; returns the charge made before, if any.

        The charge and the void take the same per-key lock, so exactly one comes first: a charge in
        flight either landed before (and is returned, for the caller to refund) or is refused."""
        async with self._engine.begin() as conn:
            await _lock_key(conn, key)
            await conn.execute(insert(voided_keys).values(idempotency_key=key).on_conflict_do_nothing())
            row = (await conn.execute(select(charges).where(charges.c.idempotency_key == key))).first()
        return Void(charge_idempotency_key=key, charge=None if row is None else _charge(row))

    async def find_charge(self, *, charge_id: str | None = None, key: str | None = None) -> Charge | None:
        column, value = (
            (charges.c.id, charge_id) if charge_id is not None else (charges.c.idempotency_key, key)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(charges).where(column == value))).first()
        return None if row is None else _charge(row)

    async def refund(self, key: str, request: RefundRequest) -> tuple[Refund, bool]:
        """Refund part or all of a succeeded charge once per ``key``; return it and whether it is a replay."""
        async with self._engine.begin() as conn:
            # Lock the charge before looking for the key, so a replay racing its original waits for it
            # and then finds it, instead of failing the balance check the original just used up.
            row = (
                await conn.execute(select(charges).where(charges.c.id == request.charge_id).with_for_update())
            ).first()
            existing = await self._refund_by_key(conn, key)
            if existing is None:
                _ensure_refundable(None if row is None else _charge(row), request)
                created = await self._insert_refund(conn, key, request)
                if created is not None:
                    return created, False
                # The same key won a race on another charge; the unique key kept it to one refund.
                existing = await self._refund_by_key(conn, key)
        # ON CONFLICT skips only for a committed row holding the key, so the lookup above found it.
        assert existing is not None
        if not existing.same_request(request):
            raise _reused(key)
        return existing, True

    @staticmethod
    async def _refund_by_key(conn: AsyncConnection, key: str) -> Refund | None:
        row = (await conn.execute(select(refunds).where(refunds.c.idempotency_key == key))).first()
        return None if row is None else _refund(row)

    @staticmethod
    async def _insert_refund(conn: AsyncConnection, key: str, request: RefundRequest) -> Refund | None:
        statement = (
            insert(refunds)
            .values(id=_new_id("re"), idempotency_key=key, charge_id=request.charge_id, amount=request.amount)
            .on_conflict_do_nothing(index_elements=[refunds.c.idempotency_key])
            .returning(*refunds.c)
        )
        row = (await conn.execute(statement)).first()
        if row is None:
            return None
        await conn.execute(
            update(charges)
            .where(charges.c.id == request.charge_id)
            .values(refunded_amount=charges.c.refunded_amount + request.amount)
        )
        return _refund(row)


async def _lock_key(conn: AsyncConnection, key: str) -> None:
    await conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": key})


def _ensure_refundable(charge: Charge | None, request: RefundRequest) -> None:
    if charge is None:
        raise Rejected(CHARGE_NOT_FOUND, f"no charge {request.charge_id!r}")
    if not charge.succeeded:
        raise Rejected(CHARGE_NOT_REFUNDABLE, f"charge {charge.id} is {charge.status.value}")
    remaining = charge.amount - charge.refunded_amount
    if request.amount > remaining:
        raise Rejected(
            REFUND_EXCEEDS_CHARGE,
            f"refund of {request.amount} exceeds the {remaining} left on charge {charge.id}",
            refundable_amount=remaining,
        )
