"""The SQL narrowing of a Q/R name query keeps every name the matcher would match.

``matching.pn_prefixes`` of a query and ``matching.pn_search_key`` of a stored name are
what the index's ``instr`` condition compares (``qr.repo.Narrowing``); it must never
drop a name that ``match_pn`` accepts (PS3.4 C.2.2.2.4: wildcards, case and accents
ignored, any component group).
"""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.qr.repo import Narrowing
from appliance.worklist.matching import match_pn, pn_prefixes, pn_search_key

JP = "Yamada^Tarou=山田^太郎=やまだ^たろう"


def kept(query: str, stored: str) -> bool:
    """Whether the narrowing's SQL condition keeps a row holding ``stored``."""
    prefixes = pn_prefixes(query)
    if prefixes is None:
        return True
    where, params = Narrowing(name_prefixes=prefixes).where()
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE qr_instances (patient_name_key TEXT)")
    db.execute("INSERT INTO qr_instances VALUES (?)", (pn_search_key(stored),))
    return db.execute(f"SELECT 1 FROM qr_instances q WHERE {where}", params).fetchone() is not None


@pytest.mark.parametrize(
    ("query", "stored"),
    [
        ("Small^0004*", "Small^00042"),
        ("SMALL^0004*", "small^00041"),  # case
        ("muller*", "Müller^Jürgen"),  # accents
        ("ｍｕｌｌｅｒ*", "Muller"),  # full-width letters fold (NFKC)
        ("山田*", JP),  # the ideographic group
        ("やまだ^た?う", JP),  # the phonetic group
        ("Doe^*", "Doe"),  # the padding of an absent component
        ("Doe^John", "Doe^John^^^"),
        ("Tanaka*=山田*", JP),  # any group of the query
        ("=山田^太郎", JP),
    ],
)
def test_matching_names_are_kept(query: str, stored: str) -> None:
    assert match_pn(query, stored)
    assert kept(query, stored)


@pytest.mark.parametrize(
    ("query", "stored"),
    [("Small^0004*", "Small^00050"), ("Tanaka*", JP), ("田*", JP), ("Doe^J*", "Doe")],
)
def test_other_names_are_left_out(query: str, stored: str) -> None:
    assert not match_pn(query, stored)
    assert not kept(query, stored)


def test_a_leading_wildcard_or_an_empty_query_does_not_narrow() -> None:
    assert pn_prefixes("*ada") is None
    assert pn_prefixes("Yamada*=*田") is None
    assert pn_prefixes("=") is None
    assert pn_prefixes("?amada") is None


names = st.text(alphabet=st.sampled_from("aBcÉü山田やま^= *?"), min_size=1, max_size=14)


@settings(max_examples=600, deadline=None)
@given(names, names)
def test_narrowing_never_drops_a_match(query: str, stored: str) -> None:
    if match_pn(query, stored):
        assert kept(query, stored)


@settings(max_examples=300, deadline=None)
@given(names, st.integers(min_value=0, max_value=14))
def test_a_prefix_query_of_a_stored_name_is_kept(stored: str, cut: int) -> None:
    query = stored.replace("*", "").replace("?", "")[:cut] + "*"
    if match_pn(query, stored):
        assert kept(query, stored)


def test_the_migration_gives_rows_held_before_it_their_name_key() -> None:
    import sqlite_utils

    from appliance.qr import index

    db = sqlite_utils.Database(memory=True)
    db.execute("CREATE TABLE forward_instances (id INTEGER PRIMARY KEY, removed_at TEXT)")
    db.execute("INSERT INTO forward_instances (id) VALUES (1)")
    index._m0001(db)
    db.execute("INSERT INTO qr_instances (instance_id, patient_name) VALUES (1, ?)", (JP,))
    index._m0002(db)
    row = db.execute("SELECT patient_name_key FROM qr_instances").fetchone()
    assert row[0] == pn_search_key(JP)
    assert row[0].startswith("=yamada^tarou=山田^太郎=")  # folded, each group kept
    index.record(db, 1, {"patient_name": "Müller^Jürgen"})
    row = db.execute("SELECT patient_name_key FROM qr_instances").fetchone()
    assert row[0] == "=muller^jurgen"
