"""Payments: the client of the payment provider's HTTP API that the checkout activities use.

It needs only httpx and pydantic. The sandbox provider that ships with us is part of the dev stack
(``invsaga.dev.payments``), which production code never imports.
"""
