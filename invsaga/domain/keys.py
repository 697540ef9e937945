"""Every idempotency key the system derives, in one place: a key's format is part of its meaning.

A retry must derive exactly the key its first attempt used, wherever the retry runs (an activity, the
reconciler, a CLI command), so each format is written once, here.
"""

from __future__ import annotations


def charge_key(order_id: str) -> str:
    """The payment provider's key for the order's one charge."""
    return f"charge-{order_id}"


def refund_key(order_id: str) -> str:
    """The payment provider's key for the refund of whatever remains of the order's charge."""
    return f"refund-{order_id}"
