"""The worklist matcher against PS3.4 C.2.2.2, on plain items (no database, no network)."""

from __future__ import annotations

import re as _re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset

from appliance.worklist import matching
from appliance.worklist.matching import (
    Glob,
    combined_bounds,
    match_pn,
    match_text,
    match_time,
    norm_time,
)
from appliance.worklist.model import fold


def item(**over):
    base = {
        "PatientName": "Yamada^Tarou=山田^太郎=やまだ^たろう",
        "PatientID": "P1",
        "AccessionNumber": "ACC1",
        "StudyInstanceUID": "1.2.3.4",
        "PatientBirthDate": "19700101",
        "PatientSex": "M",
        "RequestedProcedureCodeSequence": [
            {"CodeValue": "CT1", "CodingSchemeDesignator": "L", "CodeMeaning": "x"}
        ],
        "ScheduledProcedureStepSequence": [
            {
                "ScheduledStationAETitle": "CT1",
                "ScheduledProcedureStepStartDate": "20261124",
                "ScheduledProcedureStepStartTime": "093000",
                "Modality": "CT",
                "ScheduledProcedureStepID": "S1",
                "ScheduledPerformingPhysicianName": "",
            }
        ],
    }
    base.update(over)
    return base


def query(**keys) -> matching.Query:
    ds = Dataset()
    sps = Dataset()
    for k, v in keys.items():
        if k.startswith("sps_"):
            setattr(sps, k[4:], v)
        else:
            setattr(ds, k, v)
    if len(sps):
        ds.ScheduledProcedureStepSequence = [sps]
    return matching.parse(ds)


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"PatientID": "P1"}, True),
        ({"PatientID": "P2"}, False),
        ({"PatientID": ""}, True),  # universal
        ({"PatientID": "*"}, True),
        ({"PatientID": "P?"}, True),
        ({"PatientID": "p1"}, False),  # single value matching of LO is case-sensitive
        ({"AccessionNumber": "AC*"}, True),
        ({"AccessionNumber": "*C1"}, True),
        ({"AccessionNumber": "X*"}, False),
        ({"StudyInstanceUID": "1.2.3.4"}, True),
        ({"StudyInstanceUID": ["9.9", "1.2.3.4"]}, True),  # list of UIDs
        ({"StudyInstanceUID": ["9.9", "8.8"]}, False),
        ({"PatientBirthDate": "19700101"}, True),
        ({"PatientBirthDate": "19600101-19751231"}, True),
        ({"PatientBirthDate": "19710101-"}, False),
        ({"PatientBirthDate": "-19700101"}, True),
        ({"PatientSex": "F"}, False),
        ({"sps_Modality": "CT"}, True),
        ({"sps_Modality": "MR"}, False),
        ({"sps_ScheduledStationAETitle": "CT*"}, True),
        ({"sps_ScheduledProcedureStepStartDate": "20261124"}, True),
        ({"sps_ScheduledProcedureStepStartDate": "20261125"}, False),
        ({"sps_ScheduledProcedureStepStartDate": "20261120-20261130"}, True),
        ({"sps_ScheduledProcedureStepStartTime": "0900-1000"}, True),
        ({"sps_ScheduledProcedureStepStartTime": "1000-"}, False),
        ({"sps_ScheduledProcedureStepStartTime": "-0930"}, True),
        ({"sps_ScheduledPerformingPhysicianName": "Smith*"}, False),  # empty stored never matches
        ({"sps_ScheduledPerformingPhysicianName": ""}, True),
    ],
)
def test_single_keys(keys, expected) -> None:
    assert matching.matches(query(**keys), item()) is expected


def test_combined_date_time_range() -> None:
    """20261124-20261125 with 0800-1200 means 2026-11-24 08:00 to 2026-11-25 12:00 (C.2.2.2.5.1)."""
    q = query(
        sps_ScheduledProcedureStepStartDate="20261124-20261125",
        sps_ScheduledProcedureStepStartTime="0800-1200",
    )

    def at(d, t):
        return item(
            ScheduledProcedureStepSequence=[
                {
                    **item()["ScheduledProcedureStepSequence"][0],  # noqa: E731
                    "ScheduledProcedureStepStartDate": d,
                    "ScheduledProcedureStepStartTime": t,
                }
            ]
        )

    assert matching.matches(q, at("20261124", "0800"))
    assert matching.matches(
        q, at("20261124", "2300")
    )  # not a time-of-day filter: 24th evening is inside
    assert matching.matches(q, at("20261125", "0700"))
    assert matching.matches(q, at("20261125", "120000"))
    assert not matching.matches(q, at("20261124", "0759"))
    assert not matching.matches(q, at("20261125", "1201"))
    assert not matching.matches(q, at("20261126", "0900"))


def test_combined_open_time_end_means_end_of_day() -> None:
    assert combined_bounds("20261124", "1000-") == (
        "20261124100000.000000",
        "20261124235959.999999",
    )
    assert combined_bounds("20261124-", "") == ("20261124000000.000000", None)


def test_sequence_matching_needs_all_keys_in_one_item() -> None:
    q = query(sps_Modality="CT", sps_ScheduledStationAETitle="MR1")
    assert not matching.matches(q, item())
    ds = Dataset()
    code = Dataset()
    code.CodeValue = "CT1"
    ds.RequestedProcedureCodeSequence = [code]
    assert matching.matches(matching.parse(ds), item())
    code.CodeValue = "XX"
    assert not matching.matches(matching.parse(ds), item())


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("Yamada^Tarou", True),
        ("YAMADA^TAROU", True),  # case-insensitive
        ("yamada*", True),
        ("Yamada", False),  # single value: the whole group must match
        ("山田*", True),  # ideographic group
        ("山田^太郎", True),
        ("やまだ*", True),  # phonetic group
        ("*たろう", True),
        ("Tanaka*", False),
        ("=山田^太郎", True),  # query with only an ideographic group
        ("Y?mada^T*", True),
    ],
)
def test_person_names(pattern: str, expected: bool) -> None:
    assert match_pn(pattern, "Yamada^Tarou=山田^太郎=やまだ^たろう") is expected


def test_person_names_accent_insensitive() -> None:
    assert match_pn("muller*", "Müller^Jürgen")
    assert match_pn("MÜLLER^JURGEN", "Muller^Jürgen")
    assert match_pn("Doe^John", "Doe^John^^^")  # trailing empty components are insignificant
    assert not match_pn("Doe*", "")
    assert match_pn(
        "Doe^*", "Doe"
    )  # absent given name matches a wildcard component (found by hypothesis)


def test_times() -> None:
    assert norm_time("0930") == "093000.000000"
    assert norm_time("0930", upper=True) == "093059.999999"
    assert match_time("093000", "093000.5")
    assert match_time("0930", "093045")
    assert not match_time("0931", "093045")
    assert match_time("09:30-10:00", "0945")


def test_parse_marks_unsupported_keys_and_rejects_bad_values() -> None:
    ds = Dataset()
    ds.PatientName = ""
    ds.StudyDate = ""  # not a worklist key
    q = matching.parse(ds)
    assert q.unsupported == ["StudyDate"]
    bad = Dataset()
    bad.PatientBirthDate = "1970-01-01"
    with pytest.raises(matching.QueryError):
        matching.parse(bad)
    two = Dataset()
    two.ScheduledProcedureStepSequence = [Dataset(), Dataset()]
    with pytest.raises(matching.QueryError):
        matching.parse(two)


def test_projection_returns_exactly_the_requested_keys() -> None:
    q = query(PatientName="", PatientID="P1", sps_Modality="", sps_ScheduledStationAETitle="")
    ds = matching.project(q.keys, item())
    assert sorted(e.keyword for e in ds) == [
        "PatientID",
        "PatientName",
        "ScheduledProcedureStepSequence",
    ]
    assert sorted(e.keyword for e in ds.ScheduledProcedureStepSequence[0]) == [
        "Modality",
        "ScheduledStationAETitle",
    ]
    assert str(ds.PatientName) == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    # A zero-length sequence key returns whole items (universal sequence matching).
    ds2 = Dataset()
    ds2.RequestedProcedureCodeSequence = []
    out = matching.project(matching.parse(ds2).keys, item())
    assert out.RequestedProcedureCodeSequence[0].CodeValue == "CT1"


def test_narrowing_uses_literals_only() -> None:
    q = query(
        AccessionNumber="ACC1",
        PatientID="P*",
        PatientName="yama*",
        sps_ScheduledStationAETitle="CT1",
        sps_ScheduledProcedureStepStartDate="20261124",
        sps_ScheduledProcedureStepStartTime="0800-1200",
    )
    n = matching.narrowing_for(q)
    assert n["accession_number"] == "ACC1"
    assert "patient_id" not in n
    assert n["station_ae"] == "CT1"
    assert n["start_from"] == "20261124080000" and n["start_to"] == "20261124120059"
    assert n["name_fragment"] == "yama"


# -- property tests -------------------------------------------------------

names = st.text(alphabet=st.sampled_from("abcXYZéü山田やま^"), min_size=1, max_size=12).filter(
    lambda s: s.strip("^") != ""
)


@given(names)
def test_a_name_matches_itself_in_any_case(name: str) -> None:
    assert match_pn(name.upper(), name) or not fold(name).strip("^ ")
    assert match_pn(name, name) or not fold(name).strip("^ ")


@given(names, st.integers(min_value=0, max_value=12))
def test_prefix_with_star_matches(name: str, cut: int) -> None:
    if fold(name).rstrip("^ "):
        assert match_pn(name[:cut] + "*", name)


@given(
    st.text(alphabet="ABC12", min_size=1, max_size=8),
    st.text(alphabet="ABC12", min_size=1, max_size=8),
)
def test_text_wildcards_agree_with_fnmatch(stored: str, pattern_src: str) -> None:
    import fnmatch

    pattern = pattern_src.replace("1", "*").replace("2", "?")
    assert match_text(pattern, stored) == fnmatch.fnmatchcase(stored, pattern)


@given(st.dates(), st.dates())
def test_date_range_agrees_with_comparison(a, b) -> None:
    lo, hi = sorted((a, b))
    stored = "20261124"
    from appliance.worklist.matching import match_date

    expected = lo.strftime("%Y%m%d") <= stored <= hi.strftime("%Y%m%d")
    assert match_date(f"{lo:%Y%m%d}-{hi:%Y%m%d}", stored) is expected


# --- wildcard matching without backtracking (issue 11, point 1) ---


def _regex_reference(pattern: str, text: str) -> bool:
    rx = "".join(".*" if c == "*" else "." if c == "?" else _re.escape(c) for c in pattern)
    return _re.fullmatch(rx, text, _re.DOTALL) is not None


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="ab*?^", max_size=8), st.text(alphabet="ab^", max_size=10))
def test_glob_agrees_with_the_regex_definition(pattern, text):
    assert Glob(pattern).fullmatch(text) == _regex_reference(pattern, text)


def test_pathological_pattern_answers_at_once():
    # 12 `*` then N?? took 43 s with the regex; 200 of them against a long name is immediate here
    # (pytest-timeout would stop a backtracking matcher long before it answered).
    name = "YAMADA^TARO" * 20
    assert not match_pn("*" * 200 + "N??", name)
    assert not Glob("*a" * 60 + "b").fullmatch("a" * 400)
    assert Glob("*" * 50 + "N??").fullmatch("DOE^JONES")
