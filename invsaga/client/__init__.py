"""The checkout client for services: start, follow and cancel checkouts knowing only a Temporal address.

Importing it loads temporalio, pydantic and cryptography (for the payload codec), never the store
(tests/unit/test_layers.py checks this)::

    client = await CheckoutClient.connect("temporal:7233", "default")
    view = await client.start(CheckoutRequest(...))
"""

from invsaga.client.checkout import CheckoutClient, DecisionListener, refuse_invalid
from invsaga.temporal.codec import PayloadKeys
from invsaga.temporal.connection import connect

__all__ = ["CheckoutClient", "DecisionListener", "PayloadKeys", "connect", "refuse_invalid"]
