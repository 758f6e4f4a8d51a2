"""Events, type names, schema versions and upcasters."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from eventtape import (
    Event,
    EventRegistrationError,
    EventRegistry,
    SerializationError,
    UnknownEventType,
    UpcastError,
)
from tests.domain import REGISTRY, OrderCancelled, OrderPlaced, item


def test_events_are_immutable_and_strict() -> None:
    event = OrderCancelled(reason="x")
    with pytest.raises(ValidationError):
        event.reason = "y"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        OrderCancelled(reason="x", extra=1)  # type: ignore[call-arg]


def test_type_name_defaults_to_class_name_and_is_not_inherited() -> None:
    class Shipped(Event):
        tracking: str

    class ShippedExpress(Shipped):
        pass

    assert Shipped.__event_type__ == "Shipped"
    assert ShippedExpress.__event_type__ == "ShippedExpress"
    assert Shipped.__event_version__ == 1


def test_bad_class_attributes_are_refused() -> None:
    with pytest.raises(TypeError, match="__event_version__"):

        class Bad(Event):
            __event_version__ = 0

    with pytest.raises(TypeError, match="__event_type__"):

        class Nameless(Event):
            __event_type__ = ""


def test_encode_decode_round_trip() -> None:
    event = OrderPlaced(order_id="1", user_id="u", items=(item(price="0.10"), item("b", 3)))
    name, version, data = REGISTRY.encode(event)
    assert (name, version) == ("OrderPlaced", 1)
    decoded = REGISTRY.decode(name, version, data)
    assert decoded == event
    assert str(decoded.items[0].price) == "0.10"  # type: ignore[attr-defined]


def test_unknown_type_names_the_type_and_position() -> None:
    with pytest.raises(UnknownEventType) as caught:
        REGISTRY.decode("OrderTeleported", 1, b"{}", stream_id="order-1", position=42)
    assert caught.value.type_name == "OrderTeleported"
    assert caught.value.position == 42
    assert "OrderTeleported" in str(caught.value)
    assert "position 42" in str(caught.value)
    assert "order-1" in str(caught.value)


def test_encoding_an_unregistered_class_fails() -> None:
    class Unregistered(Event):
        pass

    with pytest.raises(UnknownEventType, match="Unregistered"):
        REGISTRY.encode(Unregistered())


def test_corrupt_data_is_a_serialization_error() -> None:
    with pytest.raises(SerializationError, match="position 7"):
        REGISTRY.decode("OrderCancelled", 1, b"{not json", stream_id="order-1", position=7)
    with pytest.raises(SerializationError):
        REGISTRY.decode("OrderCancelled", 1, b'{"reason": 5}')


def test_name_clash_is_refused_but_reregistering_is_harmless() -> None:
    registry = EventRegistry([OrderCancelled])
    registry.register(OrderCancelled)

    class Other(Event):
        __event_type__ = "OrderCancelled"

    with pytest.raises(EventRegistrationError, match="already registered"):
        registry.register(Other)
    with pytest.raises(EventRegistrationError):
        registry.register(int)  # type: ignore[type-var]


def test_renamed_class_keeps_reading_old_name_via_alias() -> None:
    class OrderVoided(Event):
        __event_type__ = "OrderVoided"
        reason: str

    registry = EventRegistry([OrderVoided])
    registry.register(name="OrderCancelledLegacy")(OrderVoided)
    assert registry.decode("OrderCancelledLegacy", 1, b'{"reason": "r"}') == OrderVoided(reason="r")
    # New events are written under the class's own name.
    assert registry.encode(OrderVoided(reason="r"))[0] == "OrderVoided"
    assert "OrderCancelledLegacy" in registry.type_names


class PriceSet(Event):
    """Version 3: v1 had `price` in cents as an int, v2 added `currency`, v3 renamed the field."""

    __event_version__ = 3
    amount: str
    currency: str


def upcasting_registry() -> EventRegistry:
    registry = EventRegistry([PriceSet])

    @registry.upcaster("PriceSet", from_version=1)
    def cents_to_decimal_string(data: dict[str, Any]) -> dict[str, Any]:
        cents = data.pop("price")
        return {**data, "price": f"{cents // 100}.{cents % 100:02d}", "currency": "EUR"}

    @registry.upcaster("PriceSet", from_version=2)
    def rename_price(data: dict[str, Any]) -> dict[str, Any]:
        data = dict(data)
        data["amount"] = data.pop("price")
        return data

    return registry


def test_upcasters_chain_from_any_old_version() -> None:
    registry = upcasting_registry()
    expected = PriceSet(amount="12.05", currency="EUR")
    assert registry.decode("PriceSet", 1, b'{"price": 1205}') == expected
    assert registry.decode("PriceSet", 2, b'{"price": "12.05", "currency": "EUR"}') == expected
    assert registry.decode("PriceSet", 3, b'{"amount": "12.05", "currency": "EUR"}') == expected


def test_missing_upcaster_step_is_reported() -> None:
    registry = EventRegistry([PriceSet])

    @registry.upcaster("PriceSet", from_version=2)
    def only_two(data: dict[str, Any]) -> dict[str, Any]:
        return data

    with pytest.raises(UpcastError, match="from version 1 to 2") as caught:
        registry.decode("PriceSet", 1, b'{"price": 1}', stream_id="price-1", position=3)
    assert (caught.value.stored_version, caught.value.current_version) == (1, 3)
    assert caught.value.position == 3


def test_event_from_the_future_is_refused() -> None:
    with pytest.raises(UpcastError, match="newer version"):
        upcasting_registry().decode("PriceSet", 4, b"{}")


def test_failing_upcaster_is_wrapped() -> None:
    with pytest.raises(UpcastError, match="raised KeyError"):
        upcasting_registry().decode("PriceSet", 1, b'{"no_price": 1}')


def test_duplicate_upcaster_is_refused() -> None:
    registry = upcasting_registry()
    with pytest.raises(EventRegistrationError):
        registry.upcaster("PriceSet", from_version=1)(lambda data: data)


def test_new_event_ids_are_real_version_4_uuids() -> None:
    import uuid

    from eventtape._core.events import new_event_id

    ids = [new_event_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    for event_id in ids[:50]:
        parsed = uuid.UUID(str(event_id))
        assert parsed == event_id
        assert hash(parsed) == hash(event_id)
        assert (event_id.version, event_id.variant) == (4, uuid.RFC_4122)
