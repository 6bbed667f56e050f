"""The schedule form's next free slot and its messages as sentences."""

from __future__ import annotations

from datetime import datetime

from hypothesis import given
from hypothesis import strategies as st

from web import i18n, stepform


def at(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M")


def test_the_next_quarter_hour_when_the_room_is_free() -> None:
    assert stepform.next_free_slot([], at("2026-12-03 10:07")) == at("2026-12-03 10:15")
    assert stepform.next_free_slot([], at("2026-12-03 10:15")) == at("2026-12-03 10:15")
    seconds = datetime(2026, 12, 3, 10, 15, 30)
    assert stepform.next_free_slot([], seconds) == at("2026-12-03 10:30")


def test_taken_slots_are_skipped() -> None:
    taken = [at("2026-12-03 10:15"), at("2026-12-03 10:30"), at("2026-12-03 10:50")]
    # 10:45 and 11:00 are within 15 minutes of 10:50: 11:15 is the first slot clear of it.
    assert stepform.next_free_slot(taken, at("2026-12-03 10:10")) == at("2026-12-03 11:15")


def test_outside_opening_hours_the_next_morning() -> None:
    assert stepform.next_free_slot([], at("2026-12-03 06:00")) == at("2026-12-03 08:00")
    assert stepform.next_free_slot([], at("2026-12-03 17:50")) == at("2026-12-04 08:00")
    assert stepform.next_free_slot([], at("2026-12-03 23:59")) == at("2026-12-04 08:00")


def test_a_full_fortnight_has_no_slot() -> None:
    start = at("2026-12-03 08:00")
    taken = [datetime.fromtimestamp(start.timestamp() + i * 15 * 60) for i in range(15 * 24 * 4)]
    assert stepform.next_free_slot(taken, start) is None


@given(
    st.lists(st.datetimes(datetime(2026, 1, 1), datetime(2026, 1, 5)), max_size=30),
    st.datetimes(datetime(2026, 1, 1), datetime(2026, 1, 4)),
)
def test_a_slot_is_on_the_grid_in_hours_and_clear_of_every_step(
    taken: list[datetime], after: datetime
) -> None:
    slot = stepform.next_free_slot(taken, after)
    assert slot is not None and slot >= after
    assert slot.minute % 15 == 0 and slot.second == 0 and 8 <= slot.hour < 18
    assert all(abs((t - slot).total_seconds()) >= 15 * 60 for t in taken)


def test_messages_are_sentences_that_name_the_field() -> None:
    label = stepform.LABELS["patient_id"]
    assert i18n.sentence(label, "is required", "en") == "Patient ID is required."
    assert i18n.sentence(label, "is required", "ja") == "患者ID: 必須です。"
    start = stepform.LABELS["start"]
    assert i18n.sentence(start, "is not a date and time", "en") == "Start is not a date and time."
    family = stepform.LABELS["name_ideo_family"]
    assert (
        i18n.sentence(family, "is longer than 30 characters", "en")
        == "Ideographic (kanji) · Family name is longer than 30 characters."
    )
    assert i18n.sentence(family, "is longer than 30 characters", "ja") == (
        "漢字 · 姓: 30 文字以内で入力してください。"
    )
    # A reason that is a sentence already, and a message without a field.
    done = "This step is completed; it can no longer be changed."
    assert i18n.sentence(label, done, "en") == done
    assert i18n.sentence((), "the step was changed meanwhile", "en") == (
        "The step was changed meanwhile."
    )


def test_every_form_field_has_a_label() -> None:
    assert set(stepform.TEXT_FIELDS) <= set(stepform.LABELS)
