"""forward.prefer: which transfer syntax the Storage SCP accepts when a modality offers
several in one presentation context (PS3.8 9.3.3.2: the acceptor chooses)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)
from pynetdicom import AE

from appliance import status
from appliance.server import Appliance
from tests.forward_factories import make_ct
from tests.forward_helpers import MODALITY, forward_config


def _accepted(app: Appliance, offered: list[str]) -> tuple[AE, object, str]:
    ae = AE(ae_title=MODALITY)
    ae.add_requested_context(CTImageStorage, offered)
    assoc = ae.associate("127.0.0.1", app.dicom_port, ae_title="APPLIANCE")
    assert assoc.is_established
    [cx] = assoc.accepted_contexts
    return ae, assoc, str(cx.transfer_syntax[0])


@pytest.mark.parametrize(
    ("prefer", "offered", "expected"),
    [
        ("lossless", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless], JPEG2000Lossless),
        ("lossless", [ImplicitVRLittleEndian, RLELossless], RLELossless),
        ("lossless", [JPEGBaseline8Bit, ImplicitVRLittleEndian], ImplicitVRLittleEndian),  # never lossy by choice
        ("lossless", [JPEGBaseline8Bit], JPEGBaseline8Bit),  # unless that is all there is
        ("uncompressed", [ImplicitVRLittleEndian, RLELossless, ExplicitVRLittleEndian], ExplicitVRLittleEndian),
        ("uncompressed", [RLELossless, ImplicitVRLittleEndian], ImplicitVRLittleEndian),
    ],
)  # fmt: skip
def test_the_preferred_syntax_is_accepted(
    start_appliance: Callable[..., Appliance], prefer: str, offered: list[str], expected: str
) -> None:
    app = start_appliance(forward_config([], prefer=prefer))
    _, assoc, accepted = _accepted(app, offered)
    assoc.release()  # type: ignore[attr-defined]
    assert accepted == expected


def test_a_lossless_compressed_instance_is_spooled_as_received(
    start_appliance: Callable[..., Appliance],
) -> None:
    app = start_appliance(forward_config([]))
    ds = make_ct()
    ds.compress(RLELossless)
    _, assoc, accepted = _accepted(app, [ExplicitVRLittleEndian, RLELossless])
    try:
        assert accepted == RLELossless
        rsp = assoc.send_c_store(ds)  # type: ignore[attr-defined]
        assert rsp.Status == status.SUCCESS
    finally:
        assoc.release()  # type: ignore[attr-defined]
    [row] = app.runtime.store.query("SELECT transfer_syntax FROM forward_instances")
    assert row["transfer_syntax"] == RLELossless
