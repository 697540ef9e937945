"""What a product is: the rules of its name, price and currency, checked at the edge.

The ISO 4217 codes are data here rather than taken from pycountry: the image installs from a hashed lock,
and a list of three-letter codes does not earn a dependency. It holds the active codes of ISO 4217's
list one (funds codes included; precious metals and the testing codes left out, nothing is sold in them).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from invsaga.domain.stock import Sku

MAX_NAME_LENGTH = 200
DEFAULT_CURRENCY = "USD"

_ISO_4217_CODES = """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP BYN
    BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP
    GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF
    KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR
    MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK
    SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU
    UYW UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG
"""
ISO_4217 = frozenset(_ISO_4217_CODES.split())


def _iso_4217(code: str) -> str:
    if code not in ISO_4217:
        raise ValueError(f"{code!r} is not an ISO 4217 currency code")
    return code


def _storable_text(name: str) -> str:
    # A lone surrogate passes every pattern but cannot be encoded for Postgres; refuse it here.
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("the name is not valid Unicode text") from None
    return name


#: Printable text, no control characters (Postgres refuses NUL, and a name is shown on one line).
ProductName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=MAX_NAME_LENGTH, pattern=r"^[^\x00-\x1f\x7f]+$"
    ),
    AfterValidator(_storable_text),
]
#: Fits the catalog's numeric(12,2): up to 9999999999.99, never more than cents.
Price = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)]
CurrencyCode = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$"), AfterValidator(_iso_4217)]


class ProductFields(BaseModel):
    """A product as an operator writes it; the version and timestamps are the store's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: Sku
    name: ProductName
    price: Price
    currency: CurrencyCode = DEFAULT_CURRENCY
    active: bool = True
