"""Keyset paging for the lists people page through (waiting items, dead letters, print jobs).

A page is asked for by its size and a cursor: the sort key of the row it follows
(``after``) or precedes (``before``; ``before=end`` is the last page, the rows that
paging forward from the start would leave for it). Rows added or
removed meanwhile neither shift nor repeat the rows of the page asked for, as an OFFSET
would, and each page is one index range search however deep it is. The total and the
page's position are counted in the same read snapshot as its rows.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from appliance.db import Store
from appliance.errors import ValidationError

MIN_SIZE = 1
MAX_SIZE = 500
DEFAULT_SIZE = 100
END = "end"
MAX_CURSOR_CHARS = 2048
CURSOR_RE = re.compile(r"^[A-Za-z0-9_-]+$")  # URL-safe base64 without the padding
BAD_SIZE = f"must be a whole number from {MIN_SIZE} to {MAX_SIZE}"
BAD_CURSOR = "is not a position in this list"
BOTH_WAYS = "cannot be given with after"


@dataclass(frozen=True)
class PageRequest:
    """Which page: ``size`` rows after the cursor ``after``, or before ``before``."""

    size: int = DEFAULT_SIZE
    after: str = ""
    before: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not MIN_SIZE <= self.size <= MAX_SIZE:
            raise ValidationError("size", BAD_SIZE)
        if self.after and self.before:
            raise ValidationError("before", BOTH_WAYS)


@dataclass(frozen=True)
class Order:
    """How a list is sorted: a column, then a unique column to break ties, both one way.

    ``key`` holds the SQL expressions, ``names`` their names in a result row, ``types``
    what a cursor's values must be.
    """

    key: tuple[str, str]
    names: tuple[str, str]
    types: tuple[type, type]
    descending: bool = False

    def encode(self, row: dict[str, Any]) -> str:
        """The cursor of a row: its sort key, opaque to people and URL-safe."""
        raw = json.dumps([row[n] for n in self.names], separators=(",", ":"), ensure_ascii=False)
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    def decode(self, cursor: str, field: str) -> tuple[Any, Any]:
        """The sort key in a cursor; ValidationError naming ``field`` when it is not one."""
        try:
            if len(cursor) > MAX_CURSOR_CHARS or not CURSOR_RE.match(cursor):
                raise ValueError("not a cursor")
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            values = json.loads(raw)
        except (ValueError, binascii.Error) as exc:
            raise ValidationError(field, BAD_CURSOR) from exc
        if not isinstance(values, list) or len(values) != 2:
            raise ValidationError(field, BAD_CURSOR)
        out = []
        for value, kind in zip(values, self.types, strict=True):
            if kind is float and type(value) is int:
                value = float(value)
            if type(value) is not kind:
                raise ValidationError(field, BAD_CURSOR)
            out.append(value)
        return out[0], out[1]


@dataclass(frozen=True)
class Page:
    """Some rows of a list, where they stand in it and the cursors to go on from them."""

    rows: list[dict[str, Any]]
    total: int
    start: int  # rows of the list before rows[0]
    size: int
    first: str = ""  # cursor of rows[0]
    last: str = ""  # cursor of rows[-1]

    @property
    def has_previous(self) -> bool:
        return self.start > 0

    @property
    def has_next(self) -> bool:
        return self.start + len(self.rows) < self.total

    @property
    def first_number(self) -> int:
        """1-based number of the first row shown (0 when none is)."""
        return self.start + 1 if self.rows else 0

    @property
    def last_number(self) -> int:
        return self.start + len(self.rows)


@dataclass(frozen=True)
class Listing:
    """A list to page through: ``select`` (columns and FROM, with joins) rows of
    ``count_from`` (the table alone, enough to count) that match every ``where``."""

    select: str
    count_from: str
    where: Sequence[str]
    params: Sequence[Any]
    order: Order


def fetch(store: Store, listing: Listing, req: PageRequest) -> Page:
    """The page ``req`` asks for, with the total and its position, from one snapshot."""
    order = listing.order
    with store.read():
        total = _count(store, listing)
        if req.before == END:  # as many rows as paging forward from the start would leave
            tail = total - (total - 1) // req.size * req.size if total else req.size
            rows = _rows(store, listing, None, tail, forward=False)
        elif req.before:
            key = order.decode(req.before, "before")
            rows = _rows(store, listing, key, req.size, forward=False)
            if len(rows) < req.size:  # reached the start: show the whole first page
                rows = _rows(store, listing, None, req.size, forward=True)
        else:
            after = order.decode(req.after, "after") if req.after else None
            rows = _rows(store, listing, after, req.size, forward=True)
        if rows:
            first = (rows[0][order.names[0]], rows[0][order.names[1]])
            start = _count(store, listing, first)
        else:
            start = total if (req.after or req.before) else 0
    if not rows:
        return Page(rows, total, start, req.size)
    return Page(rows, total, start, req.size, order.encode(rows[0]), order.encode(rows[-1]))


def _where(listing: Listing, key: tuple[Any, Any] | None, forward: bool) -> tuple[str, list]:
    """The WHERE clause, with the cursor's range when there is one: rows after ``key`` in
    list order (``forward``) or before it."""
    clauses, params = list(listing.where), list(listing.params)
    if key is not None:
        greater = forward != listing.order.descending
        a, b = listing.order.key
        clauses.append(f"({a}, {b}) {'>' if greater else '<'} (?, ?)")
        params.extend(key)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _rows(
    store: Store, listing: Listing, key: tuple[Any, Any] | None, size: int, forward: bool
) -> list[dict[str, Any]]:
    """``size`` rows after ``key`` in list order, or (``forward`` False) the ``size``
    rows just before it, still in list order."""
    where, params = _where(listing, key, forward)
    ascending = forward != listing.order.descending
    way = "" if ascending else " DESC"
    a, b = listing.order.key
    rows = store.query(f"{listing.select}{where} ORDER BY {a}{way}, {b}{way} LIMIT ?",
                       (*params, size))  # fmt: skip
    return rows if forward else rows[::-1]


def _count(store: Store, listing: Listing, before: tuple[Any, Any] | None = None) -> int:
    """How many rows the list has (all, or only those before the key ``before``)."""
    where, params = _where(listing, before, forward=False)
    rows = store.query(f"SELECT COUNT(*) AS n FROM {listing.count_from}{where}", tuple(params))
    return int(rows[0]["n"])
