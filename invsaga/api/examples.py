"""The examples ``/docs`` shows for request and answer bodies, kept apart so the models read as fields.

They use the dev stack's demo catalog (these SKUs exist there), so each request works as is from
``/docs`` and each answer is one it could get. A model gets its example through ``add_examples``, which
``invsaga.api.models`` sets on its base classes. The one-word examples of path, query and header
parameters stay on their declarations, and each problem's typical ``detail`` is in ``invsaga.api.problems``.
"""

from __future__ import annotations

from fastapi.openapi.models import Example
from pydantic.config import JsonDict

_LINKS: JsonDict = {"self": "/v1/checkouts/ord-1001", "cancel": "/v1/checkouts/ord-1001/cancel"}

STOCK_VIEW: JsonDict = {
    "sku": "MUG-BLUE",
    "locations": [{"location": "main", "on_hand": 100, "reserved": 3, "available": 97, "version": 12}],
    "total": {"on_hand": 100, "reserved": 3, "available": 97},
}

#: The body of ``POST /v1/stock/import``.
IMPORT_CSV = "sku,location,quantity\nMUG-BLUE,main,120\nTSHIRT-L,main,40\n"


def _checkout(order_id: str, token: str, *lines: tuple[str, int]) -> JsonDict:
    return {
        "order_id": order_id,
        "customer_id": "cust-42",
        "lines": [{"sku": sku, "quantity": quantity} for sku, quantity in lines],
        "payment_token": token,
    }


CHECKOUT_IN = _checkout("ord-1001", "tok_success", ("MUG-BLUE", 2), ("TSHIRT-L", 1))

#: The bodies /docs offers for ``POST /v1/checkouts``, one for each way a checkout can go.
CHECKOUT_BODIES: dict[str, Example] = {
    "buy": Example(summary="Two mugs and a T-shirt", value=CHECKOUT_IN),
    "slow": Example(
        summary="A slow payment: time to follow or cancel it",
        value=_checkout("ord-1002", "tok_slow_5000", ("MUG-BLUE", 1)),
    ),
    "declined": Example(
        summary="A declined card: released, nothing charged",
        value=_checkout("ord-1003", "tok_decline", ("MUG-BLUE", 1)),
    ),
    "sold_out": Example(
        summary="More laptops than there are: 409",
        value=_checkout("ord-1004", "tok_success", ("LAPTOP-PRO", 500)),
    ),
}

CANCEL_IN: JsonDict = {"reason": "buyer changed their mind"}
CANCEL_BODIES: dict[str, Example] = {"reason": Example(value=CANCEL_IN)}

#: Each model's example, by the model's class name.
MODEL_EXAMPLES: dict[str, JsonDict] = {
    "StockView": STOCK_VIEW,
    "StockBatch": {"items": [STOCK_VIEW], "unknown": ["MUG-RED"], "unavailable": []},
    "SetStock": {"on_hand": 120},
    "Receipt": {"quantity": 24, "reference": "PO-7731"},
    "ImportReport": {
        "batch_id": "5f0c3e9f6f1a4f67a2c1d0e3b4a59687",
        "rows_read": 3,
        "applied": 2,
        "unchanged": 0,
        "rejected": [
            {
                "line": 4,
                "sku": "MUG-BLUE",
                "location": "main",
                "quantity": 1,
                "reserved": 3,
                "reason": "below the 3 units reserved",
            }
        ],
        "seconds": 0.042,
    },
    "CheckoutIn": CHECKOUT_IN,
    "CheckoutAccepted": {
        "order_id": "ord-1001",
        "status": "PAYING",
        "held": True,
        "allocations": [
            {"sku": "MUG-BLUE", "location": "east", "quantity": 1},
            {"sku": "MUG-BLUE", "location": "main", "quantity": 1},
            {"sku": "TSHIRT-L", "location": "main", "quantity": 1},
        ],
        "links": _LINKS,
    },
    "CheckoutState": {
        "order_id": "ord-1001",
        "status": "CONFIRMED",
        "terminal": True,
        "customer_id": "cust-42",
        "reason": None,
        "detail": None,
        "shortages": [],
        "amount_minor": 5000,
        "currency": "USD",
        "charge_id": "ch_3b1f0c2a",
        "allocations": [
            {"sku": "MUG-BLUE", "location": "east", "quantity": 1},
            {"sku": "MUG-BLUE", "location": "main", "quantity": 1},
            {"sku": "TSHIRT-L", "location": "main", "quantity": 1},
        ],
        "charged": True,
        "cancel_requested": False,
        "links": _LINKS,
    },
    "CancelIn": CANCEL_IN,
    "CancelAccepted": {
        "order_id": "ord-1001",
        "status": "PAYING",
        "accepted": True,
        "reason": "buyer changed their mind",
        "links": _LINKS,
    },
    "Liveness": {"status": "ok"},
    "Readiness": {"status": "ready", "checks": {"temporal": "ok", "core database": "ok", "shard 0": "ok"}},
}


def add_examples(schema: JsonDict, model: type) -> None:
    """The models' ``json_schema_extra``: puts the model's example, if it has one, in its JSON schema."""
    example = MODEL_EXAMPLES.get(model.__name__)
    if example is not None:
        schema["examples"] = [example]
