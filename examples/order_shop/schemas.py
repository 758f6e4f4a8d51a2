"""The API's request and response bodies, with strict types.

Integers are JSON integers (``"2"``, ``2.0`` and ``true`` are refused), amounts are JSON strings
(``"12.50"``), ids are 1 to 64 ASCII letters, digits, ``_`` or ``-`` — the rules are said in the
API's own terms, never in the store's.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    WithJsonSchema,
)

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SKU = re.compile(r"[A-Za-z0-9_]{1,64}")
_KEY = re.compile(r"[!-~]{1,200}")  # printable ASCII, no spaces


def _rule(pattern: re.Pattern[str], message: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(message)
        return value

    return AfterValidator(check)


_ID_SCHEMA = WithJsonSchema({"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"})
OrderId = Annotated[
    str, _rule(_ID, "an order id is 1 to 64 letters, digits, '_' or '-'"), _ID_SCHEMA
]
UserId = Annotated[
    str, _rule(_ID, "a customer id is 1 to 64 letters, digits, '_' or '-'"), _ID_SCHEMA
]
Sku = Annotated[
    str,
    _rule(_SKU, "a SKU is 1 to 64 letters, digits or '_'"),
    WithJsonSchema({"type": "string", "pattern": "^[A-Za-z0-9_]{1,64}$"}),
]
IdempotencyKey = Annotated[
    str,
    _rule(_KEY, "an Idempotency-Key is 1 to 200 printable ASCII characters without spaces"),
    WithJsonSchema({"type": "string", "pattern": "^[!-~]{1,200}$"}),
]


_AMOUNT = re.compile(r"\d{1,10}(\.\d{1,2})?")


def _printable(value: str) -> str:
    # A NUL stops a PostgreSQL read model (TEXT cannot hold it) and control characters reach
    # operators' terminals: free text is printable, whatever the storage would accept.
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        raise ValueError("control characters are not allowed")
    return value


Printable = AfterValidator(_printable)
Name = Annotated[str, Field(min_length=1, max_length=200), Printable]
Reason = Annotated[str, Field(min_length=1, max_length=500), Printable]
TrackingNumber = Annotated[str, Field(min_length=1, max_length=100), Printable]


def _amount_text(value: Any) -> Any:
    # Only plain decimals: Decimal() would also take "1e5", "NaN", " 12", "+5" and "1_000".
    if not isinstance(value, str) or not _AMOUNT.fullmatch(value):
        raise ValueError('amounts are JSON strings of digits, such as "12.50"')
    return value


_AMOUNT_SCHEMA = {
    "type": "string",
    "pattern": r"^\d{1,10}(\.\d{1,2})?$",
    "examples": ["12.50"],
    "description": "a decimal amount, as a JSON string",
}
Amount = Annotated[
    Decimal,
    BeforeValidator(_amount_text),
    Field(gt=0, max_digits=12, decimal_places=2),
    WithJsonSchema(_AMOUNT_SCHEMA),
]
AmountText = Annotated[
    str,
    WithJsonSchema({**_AMOUNT_SCHEMA, "pattern": r"^-?\d+\.\d{2}$"}),
]
"""An amount in a response: always a string with two decimals."""

Position = Annotated[StrictInt, Field(ge=0, le=2**62)]
Status = Literal["placed", "reserved", "paid", "shipped", "cancelled"]

# -- requests ---------------------------------------------------------------------------------


class ProductIn(BaseModel):
    sku: Sku
    name: Name
    price: Amount


class RestockIn(BaseModel):
    quantity: StrictInt = Field(gt=0, le=1_000_000)


class DepositIn(BaseModel):
    amount: Amount


class ItemIn(BaseModel):
    sku: Sku
    quantity: StrictInt = Field(gt=0, le=1000)


class DeliveryIn(BaseModel):
    """Who the order goes to: personal data, stored encrypted with the customer's key."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Name
    email: Annotated[str, Field(max_length=254, pattern=r"^[^@\s]{1,64}@[^@\s]{1,189}$"), Printable]
    address: Annotated[str, Field(min_length=1, max_length=500), Printable]


class OrderIn(BaseModel):
    """An order; lines of one SKU are merged (their total may not exceed 1000)."""

    items: list[ItemIn] = Field(min_length=1, max_length=50)
    delivery: DeliveryIn | None = None
    coupon: str | None = Field(default=None, min_length=1, max_length=40, pattern=r"^[A-Z0-9_-]+$")


class CancelIn(BaseModel):
    reason: Reason


class ShipIn(BaseModel):
    tracking_number: TrackingNumber


# -- responses --------------------------------------------------------------------------------


class Problem(BaseModel):
    """An error, in the API's own terms."""

    detail: str


class StatusProblem(Problem):
    """A refused transition, with the order's current status."""

    status: str | None = None


class FieldProblem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Invalid(BaseModel):
    """Invalid input: where and why, never the input itself."""

    detail: list[FieldProblem]


class ProductWritten(BaseModel):
    sku: str
    position: Position


class Deposited(BaseModel):
    user_id: str
    position: Position


class OrderAccepted(BaseModel):
    order_id: str
    position: Position


class ProductOut(BaseModel):
    sku: str
    name: str
    price: AmountText
    available: int
    reserved: int
    shipped: int


class WalletOut(BaseModel):
    user_id: str
    balance: AmountText
    charges: dict[str, AmountText] = Field(description="order id -> amount charged")


class LineOut(BaseModel):
    sku: str
    quantity: int
    price: AmountText


class OrderOut(BaseModel):
    order_id: str
    user_id: str
    items: list[LineOut]
    amount: AmountText
    status: Status
    reason: str | None = None
    tracking_number: str | None = None
    customer_name: str | None = None
    email: str | None = None
    delivery_address: str | None = None
    version: int
    position: int
    updated_at: datetime


class OrderThen(BaseModel):
    """An order as it was at a version or a time."""

    order_id: str
    version: int
    latest_version: int
    status: Status
    user_id: str
    amount: AmountText
    items: list[LineOut]
    customer_name: str | None = None
    email: str | None = None
    delivery_address: str | None = None


class Erased(BaseModel):
    """A customer's personal data erased: when, by whom (the first erasure, on a retry too)."""

    user_id: str
    erased_by: str | None
    erased_at: datetime
    position: int


class OrderPage(BaseModel):
    orders: list[OrderOut]
    next_cursor: str | None


class EventOut(BaseModel):
    """One stored event with who did it, when and why."""

    version: int
    type: str
    data: dict[str, Any]
    actor: str | None
    recorded_at: datetime
    causation_id: str | None
    correlation_id: str | None
    position: int
    tags: list[str]


class OrderHistory(BaseModel):
    order_id: str
    events: list[EventOut]


class ProductHistory(BaseModel):
    sku: str
    events: list[EventOut]


class WalletHistory(BaseModel):
    user_id: str
    events: list[EventOut]


class ChainEventOut(EventOut):
    """An event of an order's chain, with the aggregate it belongs to."""

    aggregate: Literal["order", "product", "wallet"]
    id: str


class OrderChain(BaseModel):
    """Everything one order set off, across order, stock and wallet, in the order it happened."""

    order_id: str
    correlation_ids: list[str]
    events: list[ChainEventOut]


class ProjectionHealth(BaseModel):
    name: str
    state: str
    lag_events: int
    lag_seconds: float


class Health(BaseModel):
    store: str
    head_position: int
    read_model: list[ProjectionHealth]
    saga_backlog_events: int
    parked_saga_events: int
