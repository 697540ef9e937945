"""The provider's RFC 9457 problem types, shared by the sandbox that sends them and the client that reads
them, so a problem's meaning is pinned by its ``type`` and never by parsing prose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

PROBLEM_MEDIA_TYPE = "application/problem+json"
#: Absolute, so the type stays the same whatever host the provider runs on.
PROBLEM_BASE = "urn:inventory-saga:payments:problem:"


@dataclass(frozen=True)
class ProblemType:
    slug: str
    status: int
    title: str

    @property
    def uri(self) -> str:
        return PROBLEM_BASE + self.slug


IDEMPOTENCY_KEY_REQUIRED = ProblemType(
    "idempotency-key-required", 400, "An Idempotency-Key header of 1 to 255 characters is required"
)
INVALID_REQUEST = ProblemType("invalid-request", 422, "The request is not valid")
UNKNOWN_TOKEN = ProblemType("unknown-token", 422, "The payment token is not a known test token")
IDEMPOTENCY_KEY_REUSED = ProblemType(
    "idempotency-key-reused", 409, "The Idempotency-Key was already used with a different request"
)
CHARGE_NOT_FOUND = ProblemType("charge-not-found", 404, "No such charge")
CHARGE_NOT_REFUNDABLE = ProblemType("charge-not-refundable", 409, "Only a succeeded charge can be refunded")
REFUND_EXCEEDS_CHARGE = ProblemType(
    "refund-exceeds-charge", 409, "The refund is larger than what remains of the charge"
)
TEMPORARILY_UNAVAILABLE = ProblemType(
    "temporarily-unavailable", 503, "The card network is unavailable; nothing was charged, retry later"
)
CHARGE_KEY_VOIDED = ProblemType(
    "charge-key-voided", 409, "Charges with this Idempotency-Key were voided; nothing was charged"
)
INTERNAL_ERROR = ProblemType("internal-error", 500, "The provider failed; the outcome is unknown")


class Problem(BaseModel):
    """An ``application/problem+json`` body. Extension members are kept."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str = ""
    status: int | None = None
    detail: str = ""

    def is_a(self, problem_type: ProblemType) -> bool:
        return self.type == problem_type.uri

    @classmethod
    def of(cls, problem_type: ProblemType, detail: str, **extensions: Any) -> Problem:
        return cls(
            type=problem_type.uri,
            title=problem_type.title,
            status=problem_type.status,
            detail=detail,
            **extensions,
        )


class Rejected(Exception):
    """Raised inside the sandbox to answer with a problem; the app renders it in one place."""

    def __init__(self, problem_type: ProblemType, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.problem = Problem.of(problem_type, detail, **extensions)
