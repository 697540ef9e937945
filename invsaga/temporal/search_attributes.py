"""Search attributes an operator filters checkouts by in the Web UI, and their registration list."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

ORDER_ID = SearchAttributeKey.for_keyword("OrderId")
CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
CHECKOUT_STATUS = SearchAttributeKey.for_keyword("CheckoutStatus")
REJECT_REASON = SearchAttributeKey.for_keyword("RejectReason")
CHECKOUT_SKUS = SearchAttributeKey.for_keyword_list("CheckoutSkus")
CHECKOUT_AMOUNT = SearchAttributeKey.for_float("CheckoutAmount")

#: name -> type as the Temporal CLI spells it (`--search-attribute NAME=TYPE`).
REGISTRATION: dict[str, str] = {
    ORDER_ID.name: "Keyword",
    CUSTOMER_ID.name: "Keyword",
    CHECKOUT_STATUS.name: "Keyword",
    REJECT_REASON.name: "Keyword",
    CHECKOUT_SKUS.name: "KeywordList",
    CHECKOUT_AMOUNT.name: "Double",
}
