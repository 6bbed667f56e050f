"""Keyset paging on a real SQLite table: every row once and in order, whatever is added
or removed between two page loads."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from appliance import paging
from appliance.db import Store

ORDERS = [
    paging.Order(("t", "id"), ("t", "id"), (float, int)),
    paging.Order(("t", "id"), ("t", "id"), (float, int), descending=True),
]


def _table(keys: list[int]) -> Store:
    store = Store(Path(tempfile.mkdtemp()) / "paging.db")
    with store.write() as db:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, t REAL NOT NULL, odd INTEGER)")
        db.execute("CREATE INDEX t_t ON t(t)")
        for k in keys:
            db.execute("INSERT INTO t (t, odd) VALUES (?, ?)", (float(k), k % 2))
    return store


def _listing(order: paging.Order) -> paging.Listing:
    return paging.Listing("SELECT id, t FROM t", "t", ["odd = ?"], [1], order)


def _sorted_ids(store: Store, order: paging.Order) -> list[int]:
    way = " DESC" if order.descending else ""
    rows = store.query(f"SELECT id FROM t WHERE odd = 1 ORDER BY t{way}, id{way}")
    return [r["id"] for r in rows]


@settings(max_examples=40, deadline=None)
@given(
    keys=st.lists(st.integers(0, 30), max_size=60),  # small range: many ties
    size=st.integers(1, 12),
    descending=st.booleans(),
)
def test_forward_and_back_every_row_once_in_order(
    keys: list[int], size: int, descending: bool
) -> None:
    order = ORDERS[descending]
    store = _table(keys)
    expected = _sorted_ids(store, order)
    listing = _listing(order)
    pages, req = [], paging.PageRequest(size)
    while True:
        page = paging.fetch(store, listing, req)
        assert page.total == len(expected)
        assert page.start == sum(len(p) for p in pages)
        pages.append([r["id"] for r in page.rows])
        if not page.has_next:
            break
        req = paging.PageRequest(size, after=page.last)
    assert sum(pages, []) == expected
    assert all(len(p) == size for p in pages[:-1])
    # From the last page back: the same pages.
    back, req = [], paging.PageRequest(size, before=paging.END)
    while True:
        page = paging.fetch(store, listing, req)
        back.append([r["id"] for r in page.rows])
        if not page.has_previous:
            break
        req = paging.PageRequest(size, before=page.first)
    assert back[::-1] == pages if expected else back == [[]]
    store.close()


@settings(max_examples=40, deadline=None)
@given(
    keys=st.lists(st.integers(0, 30), min_size=1, max_size=50),
    size=st.integers(1, 8),
    changes=st.lists(st.tuples(st.booleans(), st.integers(-5, 35)), max_size=12),
)
def test_rows_added_or_removed_between_pages_never_repeat_or_reorder(
    keys: list[int], size: int, changes: list[tuple[bool, int]]
) -> None:
    order = ORDERS[0]
    store = _table(keys)
    listing = _listing(order)
    before = set(_sorted_ids(store, order))
    seen: list[int] = []
    req = paging.PageRequest(size)
    for step in range(100):
        page = paging.fetch(store, listing, req)
        seen.extend(r["id"] for r in page.rows)
        if not page.has_next:
            break
        if step < len(changes):  # someone adds a row or removes one meanwhile
            add, k = changes[step]
            with store.write() as db:
                if add:
                    db.execute("INSERT INTO t (t, odd) VALUES (?, 1)", (float(k),))
                else:
                    db.execute("DELETE FROM t WHERE id = (SELECT MIN(id) FROM t WHERE t >= ?)",
                               (float(k),))  # fmt: skip
        req = paging.PageRequest(size, after=page.last)
    assert len(seen) == len(set(seen))  # nothing twice
    final = _sorted_ids(store, order)
    position = {id_: n for n, id_ in enumerate(final)}
    kept = [i for i in seen if i in position]
    assert kept == sorted(kept, key=position.__getitem__)  # in list order
    # Every row there from start to end was seen.
    assert before & set(final) <= set(seen)
    store.close()
