"""The HTTP API's fixtures (``api``: one API over the real stack per module; ``http``: a client of it),
for every API test module without each importing them."""

from tests.integration.api_fixtures import api_fixture, http_fixture

__all__ = ["api_fixture", "http_fixture"]
