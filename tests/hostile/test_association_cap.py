"""Hostile peers: the association cap is dicom.max_associations, not a hard-coded 32."""

from __future__ import annotations

import time
from collections.abc import Callable

from pynetdicom import AE
from pynetdicom.sop_class import Verification

from appliance.server import Appliance


def _associate(port: int, title: str):
    ae = AE(ae_title="HOSTILE")
    ae.add_requested_context(Verification)
    ae.acse_timeout = 5
    return ae.associate("127.0.0.1", port, ae_title=title)


def test_association_over_the_configured_cap_is_rejected(
    start_appliance: Callable[..., Appliance],
) -> None:
    app = start_appliance({"dicom": {"max_associations": 2}})
    title = app.config.dicom.ae_title
    held = [_associate(app.dicom_port, title) for _ in range(2)]
    try:
        assert all(a.is_established for a in held)
        extra = _associate(app.dicom_port, title)
        assert extra.is_rejected
        # PS3.8 9.3.4: result 2 (transient), source 3 (ACSE provider), reason 2 (local-limit-exceeded)
        rj = extra.acceptor.primitive
        assert (rj.result, rj.result_source, rj.diagnostic) == (0x02, 0x03, 0x02)
    finally:
        for a in held:
            a.release()
    # release() returns once the A-RELEASE-RP is read; the server's association thread
    # ends just after. The slots must be free again within a second, not at once.
    deadline = time.monotonic() + 1.0
    while app.health()["services"]["dicom"]["associations"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert app.health()["services"]["dicom"]["associations"] == 0
    again = _associate(app.dicom_port, title)
    assert again.is_established
    assert again.send_c_echo().Status == 0x0000
    again.release()
