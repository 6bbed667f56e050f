"""Paging requests and cursors: sizes within bounds, cursors that round-trip, bad ones named."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance import paging
from appliance.errors import ValidationError
from web.paging import page_request

FLOAT_INT = paging.Order(("t", "id"), ("t", "id"), (float, int))
TEXTS = paging.Order(("at", "uid"), ("at", "uid"), (str, str), descending=True)


@given(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**63), 2**63 - 1))
def test_a_cursor_gives_back_the_key_it_was_made_from(t: float, id_: int) -> None:
    cursor = FLOAT_INT.encode({"t": t, "id": id_})
    assert cursor.isascii() and "=" not in cursor and "/" not in cursor and "+" not in cursor
    assert FLOAT_INT.decode(cursor, "after") == (t, id_)


@given(st.text(max_size=64), st.text(max_size=64))  # a date-time and a UID fit
def test_text_keys_round_trip(at: str, uid: str) -> None:
    assert TEXTS.decode(TEXTS.encode({"at": at, "uid": uid}), "before") == (at, uid)


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "%%%",
        "not base64!",
        "WzEsMl0=x",  # [1,2] with junk after the padding
        "e30",  # {}
        "WzFd",  # [1]
        "WyJhIiwxXQ",  # ["a",1]: text where a time goes
        "WzEsMS41XQ",  # [1,1.5]: a fraction where an id goes
        "W3RydWUsMV0",  # [true,1]
        "A" * 3000,  # too long to be one
    ],
)
def test_a_bad_cursor_names_its_parameter(cursor: str) -> None:
    with pytest.raises(ValidationError) as info:
        FLOAT_INT.decode(cursor, "before")
    assert info.value.field == "before" and info.value.reason == paging.BAD_CURSOR


@given(st.text(max_size=60))
def test_any_text_is_a_key_or_a_validation_error(cursor: str) -> None:
    try:
        key = TEXTS.decode(cursor, "after")
    except ValidationError as exc:
        assert exc.field == "after"
    else:
        assert all(isinstance(v, str) for v in key)


@pytest.mark.parametrize(
    "args,size",
    [({}, 100), ({"size": "1"}, 1), ({"size": " 500 "}, 500), ({"size": ""}, 100)],
)
def test_page_size_from_the_query_string(args: dict, size: int) -> None:
    assert page_request(args).size == size


@pytest.mark.parametrize(
    "args,field",
    [
        ({"size": "0"}, "size"),
        ({"size": "501"}, "size"),
        ({"size": "-1"}, "size"),
        ({"size": "2.5"}, "size"),
        ({"size": "１０"}, "size"),  # full-width digits are not a size
        ({"size": "9" * 40}, "size"),
        ({"after": "x", "before": "y"}, "before"),
    ],
)
def test_bad_page_request_names_the_parameter(args: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        page_request(args)
    assert info.value.field == field
