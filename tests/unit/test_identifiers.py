"""The one UID check and the one AE title check (appliance.identifiers), and that every
part that checks a UID or an AE title answers the same for the same value."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance import destinations, devices, identifiers
from appliance.config import (
    DestinationSettings,
    DeviceSettings,
    validate_ae_title,
    validate_destination,
)
from appliance.dicom import edge
from appliance.errors import ConfigError, ValidationError
from appliance.forward.receiver import check_uid
from appliance.worklist import model

GOOD_UIDS = ["1.2.840.10008.1.1", "0", "1.2.3.0.4", "2.25." + "9" * 58]
BAD_UIDS = ["", "1..2", ".1", "1.", "1.2.x", "1.2 3", "1" * 65, "１.２"]


@pytest.mark.parametrize("uid", GOOD_UIDS)
def test_good_uids(uid: str) -> None:
    assert identifiers.uid_problem(uid) is None
    assert identifiers.uid_problem(uid, strict=True) is None


@pytest.mark.parametrize("uid", BAD_UIDS)
def test_bad_uids_and_why(uid: str) -> None:
    assert identifiers.uid_problem(uid) is not None
    assert identifiers.uid_problem(uid, strict=True) is not None


def test_leading_zeros_only_in_strict() -> None:
    assert identifiers.is_uid("1.02.3") and not identifiers.is_uid("1.02.3", strict=True)
    assert "leading zeros" in str(identifiers.uid_problem("01.2", strict=True))


@pytest.mark.parametrize("ae", ["PACS", "CT 1", " X", "A" * 16, "a-b_c.d"])
def test_good_ae_titles(ae: str) -> None:
    assert identifiers.ae_title_problem(ae) is None


@pytest.mark.parametrize(
    ("ae", "why"),
    [("", "empty"), ("    ", "empty"), ("A" * 17, "longer than 16"), ("A\\B", "backslash"),
     ("A\tB", "control"), ("A\x7fB", "control"), ("CTé", "non-ASCII")],
)  # fmt: skip
def test_bad_ae_titles_and_why(ae: str, why: str) -> None:
    assert why in str(identifiers.ae_title_problem(ae))


printable = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x17F), max_size=20)


@given(printable)
def test_config_worklist_and_edge_agree_on_ae_titles(value: str) -> None:
    """The file, the schedule form and the A-ASSOCIATE-RQ check give the same verdict."""
    ok = identifiers.ae_title_problem(value) is None
    try:
        validate_ae_title(value, "x")
        config_ok = True
    except ConfigError:
        config_ok = False
    request = dataclasses.replace(_step(), station_ae=value)
    try:
        model.validate_request(request)
        form_ok = True
    except ValidationError as exc:
        form_ok = exc.field != "station_ae"
    assert config_ok == form_ok == ok
    raw = (
        value.encode("latin-1", "replace")
        if len(value.encode("latin-1", "replace")) <= 16
        else None
    )
    if raw is not None and value == raw.decode("latin-1"):
        assert edge._valid_ae(raw.ljust(16, b" ")) == ok


uid_text = st.text(alphabet="0123456789.x ", max_size=70)


@given(uid_text)
def test_receiver_edge_and_config_agree_on_uids(value: str) -> None:
    ok = identifiers.is_uid(value)
    try:
        check_uid(value, "SOPInstanceUID")
        receiver_ok = True
    except ValidationError:
        receiver_ok = False
    try:
        edge._check_uid(value.encode(), "abstract syntax")
        edge_ok = True
    except edge.Refusal:
        edge_ok = False
    try:
        validate_destination(_destination(sop_classes=(value,)), "destinations[0]")
        config_ok = True
    except ConfigError:
        config_ok = False
    stripped = value.rstrip("\0 ")
    assert receiver_ok == edge_ok == identifiers.is_uid(stripped)
    assert config_ok == ok


def test_devices_and_destinations_use_the_public_validators() -> None:
    with pytest.raises(ValidationError) as err:
        devices.validate(DeviceSettings(ae_title="A\\B"))
    assert err.value.field == "ae_title" and "backslash" in err.value.reason
    with pytest.raises(ValidationError) as err:
        destinations.validate(_destination(sop_classes=("1..2",)))
    assert err.value.field == "sop_classes"


def _step() -> model.StepRequest:
    return model.StepRequest(
        patient_id="P1", patient_name="DOE^JANE", station_ae="CT1", modality="CT",
        start=datetime(2026, 1, 1, 9, 0),
    )  # fmt: skip


def _destination(**over: object) -> DestinationSettings:
    values: dict = {"name": "d", "ae_title": "PACS", "host": "127.0.0.1", "port": 104}
    return DestinationSettings(**{**values, **over})
