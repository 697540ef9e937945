"""Temporal's RPC errors as the API answers them: transient ones are a retryable 503, the rest stay errors."""

from __future__ import annotations

import pytest
from temporalio.service import RPCError, RPCStatusCode

from invsaga.api.checkouts import cancel_checkout, checkout_state, start_checkout
from invsaga.api.problems import problem_response
from invsaga.domain.checkout import CheckoutLine, CheckoutRequest
from invsaga.domain.errors import ShardUnavailable
from invsaga.temporal.errors import domain_errors

#: Seen against a real cluster: worker restarts fail the workflow task, a Temporal restart the transport.
TRANSIENT = {
    RPCStatusCode.UNAVAILABLE: "connection refused",
    RPCStatusCode.DEADLINE_EXCEEDED: "context deadline exceeded",
    RPCStatusCode.RESOURCE_EXHAUSTED: "namespace rate limit exceeded",
    RPCStatusCode.FAILED_PRECONDITION: "Workflow task in failed state.",
    RPCStatusCode.UNKNOWN: "transport error",
}


def rpc_error(status: RPCStatusCode, message: str = "no") -> RPCError:
    return RPCError(message, status, raw_grpc_status=b"")


@pytest.mark.parametrize("status", list(TRANSIENT), ids=lambda status: status.name)
async def test_a_transient_temporal_error_is_a_retryable_503(status):
    with pytest.raises(ShardUnavailable) as caught:
        async with domain_errors():
            raise rpc_error(status, TRANSIENT[status])

    assert caught.value.retryable and TRANSIENT[status] in caught.value.message
    response = problem_response(caught.value)
    assert response.status_code == 503 and response.headers["retry-after"] == "1"


@pytest.mark.parametrize(
    "status", [RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.INTERNAL]
)
async def test_other_temporal_errors_are_not_called_transient(status):
    with pytest.raises(RPCError):
        async with domain_errors():
            raise rpc_error(status)


class _Down:
    """A checkout client (and workflow handle) whose every Temporal call fails as ``error``."""

    def __init__(self, error: RPCError) -> None:
        self.error = error

    def handle(self, order_id: str) -> _Down:
        return self

    async def _fail(self, *args: object, **kwargs: object) -> None:
        raise self.error

    start = describe = result = status = cancel = _fail


_REQUEST = CheckoutRequest(
    order_id="ord-1",
    customer_id="cust-1",
    lines=[CheckoutLine(sku="MUG", quantity=1)],
    payment_token="tok_success",
)
_OPERATIONS = {
    "POST /v1/checkouts": lambda client: start_checkout(client, _REQUEST),
    "GET /v1/checkouts/{id}": lambda client: checkout_state(client, "ord-1"),
    "POST /v1/checkouts/{id}/cancel": lambda client: cancel_checkout(client, "ord-1", "changed my mind"),
}


@pytest.mark.parametrize("operation", list(_OPERATIONS))
@pytest.mark.parametrize(
    "status", [RPCStatusCode.FAILED_PRECONDITION, RPCStatusCode.UNKNOWN], ids=lambda status: status.name
)
async def test_every_route_to_temporal_answers_a_transient_error_as_503(operation, status):
    with pytest.raises(ShardUnavailable):
        await _OPERATIONS[operation](_Down(rpc_error(status, TRANSIENT[status])))


@pytest.mark.parametrize("code", ["order_id_reused", "too_late_to_cancel", "out_of_stock", "unavailable"])
def test_an_error_raised_by_code_in_a_workflow_comes_back_as_its_own_class(code):
    from temporalio.exceptions import ApplicationError

    from invsaga.domain.errors import error_class
    from invsaga.temporal.errors import domain_error

    error = domain_error(ApplicationError("refused", type=code), order_id="ord-1")
    assert type(error) is error_class(code) and error is not None
    assert error.code == code and error.message == "refused" and error.details["order_id"] == "ord-1"


def test_not_found_is_checkout_not_found_only_for_an_order():
    from invsaga.domain.errors import CheckoutNotFound
    from invsaga.temporal.errors import domain_error

    assert isinstance(domain_error(rpc_error(RPCStatusCode.NOT_FOUND), order_id="o"), CheckoutNotFound)
    assert domain_error(rpc_error(RPCStatusCode.NOT_FOUND)) is None
    assert domain_error(ValueError("a bug")) is None
