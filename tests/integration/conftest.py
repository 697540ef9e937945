"""Fixtures for every integration module without each importing them: the HTTP API's (``api``: one
API over the real stack per module; ``http``: a client of it), and ``three_servers``, a module's own
fleet for the resharding tests, which change the slot map and the shard registry."""

from collections.abc import Iterator

import pytest

from invsaga.dev.postgres import PgFleet, start_fleet
from tests.integration.api_fixtures import api_fixture, http_fixture

__all__ = ["api_fixture", "http_fixture", "three_servers"]


@pytest.fixture(scope="module")
def three_servers() -> Iterator[PgFleet]:
    """Three shard servers and a core server of the module's own; the tests list two shards in
    INVSAGA_SHARD_DSNS and register the third, as an operator adding a shard does."""
    fleet = start_fleet(3)
    try:
        yield fleet
    finally:
        fleet.stop()
