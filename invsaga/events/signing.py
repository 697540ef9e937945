"""Webhook signatures: HMAC-SHA256 of ``"<timestamp>.<body>"`` under the webhook's secret, sent as
``Invsaga-Signature: t=<unix seconds>,v1=<hex digest>`` (the scheme Stripe's receivers already know).

The timestamp is signed with the body, so a receiver that refuses old timestamps also refuses a
captured delivery replayed later; ``verify`` is what a Python receiver runs.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

SIGNATURE_HEADER = "Invsaga-Signature"
EVENT_ID_HEADER = "Invsaga-Event-Id"
EVENT_TYPE_HEADER = "Invsaga-Event-Type"
#: How far a receiver should let a signature's timestamp be from its own clock.
DEFAULT_TOLERANCE_SECONDS = 300


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    """The ``Invsaga-Signature`` header's value for ``body``."""
    at = int(time.time()) if timestamp is None else timestamp
    return f"t={at},v1={_digest(secret, at, body)}"


def verify(
    secret: str,
    header: str,
    body: bytes,
    *,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """True when ``header`` signs exactly ``body`` under ``secret`` with a timestamp near ``now``."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_seconds:
        return False
    expected = _digest(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in parts.get("v1", []))
