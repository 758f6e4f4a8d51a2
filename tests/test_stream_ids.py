"""The one stream id rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventtape import MAX_STREAM_ID_LENGTH, InvalidStreamId, category_of, validate_stream_id


@pytest.mark.parametrize(
    "good",
    ["order-12345", "order", "order-a-b-c", "user:789", "ünïcode-1", "x" * MAX_STREAM_ID_LENGTH],
)
def test_valid_ids_pass_unchanged(good: str) -> None:
    assert validate_stream_id(good) == good


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("", "empty"),
        ("order 1", "whitespace"),
        ("order\u00a01", "whitespace"),
        ("order.1", "separator"),
        ("order-*", "wildcard"),
        ("order->", "wildcard"),
        ("order-\x07", "control"),
        ("order-\u200b", "invisible"),
        ("-1", "category"),
        ("x" * (MAX_STREAM_ID_LENGTH + 1), "limit"),
        (42, "must be a str"),
        (None, "must be a str"),
    ],
)
def test_invalid_ids_say_why(bad: object, reason: str) -> None:
    with pytest.raises(InvalidStreamId, match=reason) as caught:
        validate_stream_id(bad)
    assert caught.value.stream_id == bad


@given(st.text(max_size=MAX_STREAM_ID_LENGTH + 5))
def test_accepted_ids_can_never_be_misread_as_subjects(candidate: str) -> None:
    try:
        validate_stream_id(candidate)
    except InvalidStreamId:
        return
    assert candidate
    assert len(candidate) <= MAX_STREAM_ID_LENGTH
    assert not any(char in ".*>" or char.isspace() or not char.isprintable() for char in candidate)


def test_category() -> None:
    assert category_of("order-12345") == "order"
    assert category_of("order-a-b") == "order"
    assert category_of("inventory") == "inventory"
