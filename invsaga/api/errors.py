"""Errors only the HTTP edge can raise, as members of the one domain hierarchy.

They extend ``invsaga.domain.errors`` rather than standing beside it, so ``invsaga.api.problems`` maps
every error the API answers with from a single table, and each keeps a stable ``code``.
"""

from __future__ import annotations

from invsaga.domain.errors import InvalidInput, InventoryError


class Unauthorized(InventoryError):
    """No API key, or one that is not configured."""

    code = "unauthorized"


class Forbidden(InventoryError):
    """A valid API key without the scope the route needs."""

    code = "forbidden"


class IdempotencyKeyRequired(InvalidInput):
    code = "idempotency_key_required"


class IdempotencyKeyReused(InvalidInput):
    """The key was first used with a different request; its answer belongs to that request."""

    code = "idempotency_key_reused"


class PreconditionRequired(InvalidInput):
    """A compare-and-set route was called without the version it must compare against."""

    code = "precondition_required"


class PayloadUndecodable(InvalidInput):
    """The codec server was sent a payload it cannot decrypt: an unknown key id, or altered bytes."""

    code = "payload_undecodable"


class PayloadTooLarge(InvalidInput):
    code = "payload_too_large"


class UnsupportedMediaType(InvalidInput):
    code = "unsupported_media_type"


class RouteNotFound(InventoryError):
    code = "not_found"


class MethodNotAllowed(InventoryError):
    code = "method_not_allowed"
