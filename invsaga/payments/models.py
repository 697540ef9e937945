"""The provider's wire format: requests and the charge and refund resources, defined once for both ends.

Amounts are integers in the currency's minor unit (cents for EUR), so no float ever touches money.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt

#: The largest single charge, as card networks cap it; a bigger number is almost always a unit mistake.
MAX_AMOUNT = 99_999_999

Amount = Annotated[StrictInt, Field(gt=0, le=MAX_AMOUNT)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, upper case")]
Identifier = Annotated[str, Field(min_length=1, max_length=255)]


class ChargeStatus(StrEnum):
    SUCCEEDED = "succeeded"
    DECLINED = "declined"


class ChargeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    amount: Amount
    currency: Currency
    token: Identifier
    reference: Identifier = Field(description="The caller's own id for the payment, e.g. the order id")


class Charge(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    status: ChargeStatus
    amount: int
    currency: str
    token: str
    reference: str
    idempotency_key: str
    created_at: datetime
    refunded_amount: int

    @property
    def succeeded(self) -> bool:
        return self.status is ChargeStatus.SUCCEEDED

    def same_request(self, request: ChargeRequest) -> bool:
        return (self.amount, self.currency, self.token, self.reference) == (
            request.amount,
            request.currency,
            request.token,
            request.reference,
        )


class VoidRequest(BaseModel):
    """Void a charge idempotency key: from now on no charge with it can be made."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    charge_idempotency_key: Identifier


class Void(BaseModel):
    """A voided key, and the charge that was made with it before the void, if any."""

    model_config = ConfigDict(frozen=True)

    charge_idempotency_key: str
    charge: Charge | None = None


class RefundRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    charge_id: Identifier
    amount: Amount


class Refund(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    charge_id: str
    amount: int
    idempotency_key: str
    created_at: datetime

    def same_request(self, request: RefundRequest) -> bool:
        return (self.charge_id, self.amount) == (request.charge_id, request.amount)
