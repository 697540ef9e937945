"""What every caller of Temporal shares: the connection (pydantic converter), the search attributes and
the one translation of Temporal's failures back to domain errors. It needs temporalio and the domain
only, so the thin client can use it."""
