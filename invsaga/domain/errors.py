"""The one hierarchy of domain errors.

Each error has a stable ``code``. Entrypoints map the hierarchy once: to HTTP problem types, to Temporal
``ApplicationError`` types and to CLI exit codes. Nothing else should invent error names.
"""

from __future__ import annotations

from typing import Any, ClassVar


class InventoryError(Exception):
    """Base of every error the system raises on purpose."""

    code: ClassVar[str] = "inventory_error"
    #: Retrying the same call later can succeed (the shard was down, not the input wrong).
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.details}


def error_class(code: str) -> type[InventoryError] | None:
    """The class whose stable ``code`` this is: how an error that crossed a boundary by its code (a
    Temporal ``ApplicationError`` type) becomes itself again."""
    pending: list[type[InventoryError]] = [InventoryError]
    while pending:
        cls = pending.pop()
        if cls.code == code:
            return cls
        pending.extend(cls.__subclasses__())
    return None


class InvalidInput(InventoryError):
    code = "invalid_input"


class UnknownSku(InventoryError):
    code = "unknown_sku"


class OutOfStock(InventoryError):
    """Raised when a reservation cannot be met in full; ``shortages`` names the short lines."""

    code = "out_of_stock"


class UnknownProduct(InventoryError):
    """Stock was offered for a SKU the catalog does not know (add the product first, or allow it)."""

    code = "unknown_product"


class ProductNotFound(InventoryError):
    """The catalog has no product of this SKU."""

    code = "product_not_found"


class ProductExists(InventoryError):
    """A create met a product of the same SKU with other values; change it with its version."""

    code = "product_exists"


class VersionConflict(InventoryError):
    """A compare-and-set lost: the caller's expected version is stale."""

    code = "version_conflict"


class BelowReserved(InventoryError):
    """Stock may never be set below what is already promised to buyers."""

    code = "below_reserved"


class ReservationClosed(InventoryError):
    """The order's hold was already released, expired or committed, so it cannot be reused."""

    code = "reservation_closed"


class IdempotencyKeyConflict(InventoryError):
    """An idempotency key came back with a different request: replaying the first would hide the
    mismatch, and applying the second would break the key's promise of one effect."""

    code = "idempotency_key_conflict"


class ShardUnavailable(InventoryError):
    code = "unavailable"
    retryable = True


class SlotMoving(ShardUnavailable):
    """A shard refused a write because the slot of a row it touches is moving (its last catch-up runs)
    or has moved to another shard since the caller's slot map was read. Nothing was written. Reload the
    map up to ``epoch`` and route again (``invsaga.store.rerouting``). Retryable like any outage."""

    code = "slot_moving"


class MoveRefused(InventoryError):
    """A slot move cannot start, go on or be aborted as asked (another move holds its slots, a
    transaction it must wait for stays open, it has flipped already); nothing changed for this call."""

    code = "move_refused"


class SchemaMismatch(InventoryError):
    """A database's schema is newer than this code, or not migrated at all."""

    code = "schema_mismatch"


class ConfigurationError(InventoryError):
    code = "configuration_error"


class PaymentDeclined(InventoryError):
    code = "payment_declined"


class PaymentUnavailable(InventoryError):
    code = "payment_unavailable"
    retryable = True


class CheckoutNotFound(InventoryError):
    code = "checkout_not_found"


class OrderNotFound(InventoryError):
    """No order with this id in the core database (a checkout records its order before reserving)."""

    code = "order_not_found"


class CancelRefused(InventoryError):
    """The checkout is confirming or already over; it can no longer be cancelled."""

    code = "too_late_to_cancel"


class OrderIdReused(InventoryError):
    """The order id already stands for another order (other lines or another customer)."""

    code = "order_id_reused"


class PaymentOutcomeUnknown(PaymentUnavailable):
    """The provider may have acted on the request but no answer came back: look it up by key."""

    code = "payment_outcome_unknown"


class WebhookNotFound(InventoryError):
    """No webhook with this id is registered (or it was deleted)."""

    code = "webhook_not_found"
