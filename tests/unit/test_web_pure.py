"""Pure parts of the web edge: form parsing, PN composition, translations, login limiter."""

from __future__ import annotations

from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from appliance import catalog
from web import i18n, stepform
from web.security import LoginLimiter

LOOKUPS = stepform.Lookups(
    station=lambda ae: {"ae_title": ae, "modality": "CT"} if ae == "CT1" else None,
    procedure=lambda code: (
        catalog.Procedure("CTHEAD", "LOCAL", "CT Head", "CT") if code == "CTHEAD" else None
    ),
)
GOOD = {
    "patient_id": "P1",
    "name_alpha_family": "Yamada",
    "name_alpha_given": "Tarou",
    "name_ideo_family": "山田",
    "name_ideo_given": "太郎",
    "name_phon_family": "やまだ",
    "name_phon_given": "たろう",
    "procedure": "CTHEAD",
    "station_ae": "CT1",
    "start": "2026-11-27T10:30",
}


def test_parse_good_request() -> None:
    parsed = stepform.parse(GOOD, LOOKUPS, today=date(2026, 11, 27))
    assert parsed.errors == {}
    req = parsed.request
    assert req.patient_name == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert req.modality == "CT" and req.sps_description == "CT Head"


def test_name_groups_compose_to_pn() -> None:
    errors: dict[str, str] = {}
    assert stepform.compose_name({"name_alpha_family": "Doe"}, errors) == "Doe"
    assert stepform.compose_name({"name_ideo_family": "山田"}, errors) == "=山田"
    assert (
        stepform.compose_name({"name_alpha_family": "A", "name_phon_given": "た"}, errors)
        == "A==^た"
    )
    assert errors == {}


@given(
    st.text(
        alphabet=st.characters(
            blacklist_characters="^=\\", blacklist_categories=("Cc", "Cs", "Zs")
        ),
        max_size=10,
    ),
    st.text(
        alphabet=st.characters(
            blacklist_characters="^=\\", blacklist_categories=("Cc", "Cs", "Zs")
        ),
        max_size=10,
    ),
)
def test_split_is_the_inverse_of_compose(family: str, given_name: str) -> None:
    data = {"name_ideo_family": family, "name_ideo_given": given_name}
    errors: dict[str, str] = {}
    pn = stepform.compose_name(data, errors)
    if not family and not given_name:
        assert errors == {"patient_name": "is required"}
        return
    back = stepform.split_name(pn)
    assert back["name_ideo_family"] == family and back["name_ideo_given"] == given_name


def test_birth_date_formats() -> None:
    for raw, expected in (("1970-03-04", "19700304"), ("19700304", "19700304")):
        assert stepform.parse({**GOOD, "birth_date": raw}, LOOKUPS).request.birth_date == expected


def test_translations() -> None:
    assert i18n.translate("Schedule board", "ja") == "予約ボード"
    assert i18n.translate("Schedule board", "en") == "Schedule board"
    assert i18n.translate("is longer than 64 characters", "ja") == "64 文字以内で入力してください"
    assert i18n.translate("Imported %(n)s procedures.", "ja", n=3) == "3 件の検査を取り込みました。"
    assert i18n.translate("Something new", "ja") == "Something new"


def test_every_status_and_priority_has_japanese() -> None:
    from appliance.worklist.model import PRIORITIES, STATUSES

    for word in (*STATUSES, *(p for p in PRIORITIES if p)):
        assert word in i18n.JA, word


def test_language_choice() -> None:
    from werkzeug.datastructures import LanguageAccept

    ja = LanguageAccept([("ja", 1), ("en", 0.5)])
    assert i18n.pick("", ja) == "ja"
    assert i18n.pick("en", ja) == "en"
    assert i18n.pick("", ja, cookie="en") == "en"
    assert i18n.pick("", LanguageAccept([("fr", 1)])) == "en"


def test_login_limiter_window() -> None:
    now = [0.0]
    lim = LoginLimiter(per_user=2, per_address=3, window_s=60, clock=lambda: now[0])
    lim.failed("a", "1.1.1.1")
    assert lim.retry_after("a", "1.1.1.1") == 0
    lim.failed("A", "1.1.1.1")
    assert lim.retry_after("a", "2.2.2.2") == 60  # per user, case-insensitive
    lim.failed("b", "1.1.1.1")
    assert lim.retry_after("c", "1.1.1.1") > 0  # per address
    now[0] = 61
    assert lim.retry_after("a", "1.1.1.1") == 0
    lim.failed("a", "9.9.9.9")
    lim.succeeded("a")
    assert lim.retry_after("a", "8.8.8.8") == 0


def test_names_for_people() -> None:
    from web import pn_alphabetic, pn_display

    assert pn_display("Yamada^Tarou=山田^太郎=やまだ^たろう") == "山田 太郎"
    assert pn_alphabetic("Yamada^Tarou=山田^太郎=やまだ^たろう") == "Yamada Tarou"
    assert pn_display("Doe^John") == "Doe John" and pn_alphabetic("Doe^John") == ""
    assert pn_display("==やまだ^たろう") == "やまだ たろう"
    assert pn_display("") == ""
