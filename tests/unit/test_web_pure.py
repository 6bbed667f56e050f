"""Pure parts of the web edge: form parsing, PN composition, translations, login limiter."""

from __future__ import annotations

from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from appliance import catalog
from web import i18n, stepform
from web.security import LoginThrottle

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


def test_login_throttle_slows_the_failing_address_down_exponentially() -> None:
    now = [0.0]
    t = LoginThrottle(address_free=3, address_cap_s=10, user_free=100, clock=lambda: now[0])
    waits = []
    for _ in range(8):
        now[0] += waits[-1] if waits else 0  # the client waits as told
        t.failed("admin", "10.0.0.1")
        waits.append(t.retry_after("admin", "10.0.0.1"))
    assert waits == [0, 0, 0, 1, 2, 4, 8, 10]  # then capped
    assert t.retry_after("other", "10.0.0.1") == 10  # the address, whatever the name
    assert t.retry_after("admin", "10.0.0.2") == 0  # another address: at once
    t.succeeded("10.0.0.1")
    assert t.retry_after("admin", "10.0.0.1") == 0


def test_login_throttle_counts_an_ipv6_address_as_its_64() -> None:
    t = LoginThrottle(address_free=1, user_free=100, clock=lambda: 0.0)
    t.failed("admin", "2001:db8:1:2::10")
    t.failed("admin", "2001:db8:1:2:ffff::1")  # the same /64: the same client
    assert t.retry_after("admin", "2001:db8:1:2::99") == 1
    assert t.retry_after("admin", "2001:db8:1:3::10") == 0
    t.failed("admin", "::ffff:192.0.2.1")
    t.failed("admin", "192.0.2.1")  # v4-mapped is the IPv4 address
    assert t.retry_after("admin", "192.0.2.1") == 1


def test_login_throttle_per_user_only_for_failing_addresses() -> None:
    now = [0.0]
    t = LoginThrottle(address_free=100, user_free=2, user_cap_s=5, clock=lambda: now[0])
    for i in range(6):
        t.failed("Admin", f"10.0.0.{i}")  # one guess from each of six addresses
    assert t.retry_after("admin", "10.0.0.1") == 5  # per user name (case-insensitive), capped
    assert t.retry_after("other", "10.0.0.1") == 0
    assert t.retry_after("admin", "192.168.1.5") == 0  # an address that has not failed
    t.failed("nobody", "10.0.0.9", known_user=False)
    assert t.sizes() == (7, 1)  # unknown names are not remembered


def test_login_throttle_forgets_and_stays_bounded() -> None:
    now = [0.0]
    t = LoginThrottle(address_free=1, forget_s=60, max_keys=100, clock=lambda: now[0])
    t.failed("admin", "10.0.0.1")
    t.failed("admin", "10.0.0.1")
    assert t.retry_after("admin", "10.0.0.1") == 1
    now[0] = 61
    assert t.retry_after("admin", "10.0.0.1") == 0
    t.failed("admin", "10.0.0.1")
    assert t.retry_after("admin", "10.0.0.1") == 0  # counting from zero again
    for i in range(5000):
        t.failed(f"user{i}", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    assert t.sizes() == (100, 100)
    for _ in range(10_000):
        t.failed("admin", "10.0.0.1")  # no overflow however long it goes on
    assert t.retry_after("admin", "10.0.0.1") == 60


def test_names_for_people() -> None:
    from web import pn_alphabetic, pn_display

    assert pn_display("Yamada^Tarou=山田^太郎=やまだ^たろう") == "山田 太郎"
    assert pn_alphabetic("Yamada^Tarou=山田^太郎=やまだ^たろう") == "Yamada Tarou"
    assert pn_display("Doe^John") == "Doe John" and pn_alphabetic("Doe^John") == ""
    assert pn_display("==やまだ^たろう") == "やまだ たろう"
    assert pn_display("") == ""
