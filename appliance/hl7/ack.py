"""Original-mode acknowledgments: ACK with MSA and ERR segments (HL7 v2.5.1 2.9.2, 2.15.5).

Pure. The ACK is built from the received message by python-hl7 (``create_ack``), repeats
its MSH-18 so the sender reads it in its own character set, and carries one ERR segment
per error: ERR-2 location, ERR-3 Table 0357 code, ERR-4 severity, ERR-8 the reason.
"""

from __future__ import annotations

from collections.abc import Sequence

import hl7

from appliance.hl7.mapping import ERROR_TEXT, Location, escape

ACCEPT = "AA"
ERROR = "AE"
REJECT = "AR"


def build(
    received: hl7.Message,
    code: str,
    errors: Sequence[tuple[Location, str, str]] = (),
    application: str = "",
) -> str:
    """The ACK text for a received message: MSH, MSA (with MSA-3 for older readers), ERR."""
    msh = received.segment("MSH")
    ack = received.create_ack(ack_code=code, application=application or None)
    if len(msh) > 18 and str(msh(18)):
        ack.segment("MSH").assign_field(str(msh(18)), 18)
    text = str(ack)
    if errors:
        first = errors[0][2]
        text = text.rstrip("\r") + "|" + escape(first[:80]) + "\r"
    for location, error_code, reason in errors:
        meaning = ERROR_TEXT.get(error_code, "")
        text += f"ERR||{location}|{error_code}^{meaning}^HL70357|E||||{escape(reason)}\r"
    return text


def bare_reject(reason: str) -> str:
    """An AR for bytes whose MSH cannot be read: nothing of the sender can be repeated."""
    base = hl7.parse("MSH|^~\\&|||||||ACK^^ACK||P|2.5.1\r")
    ack = base.create_ack(ack_code=REJECT)
    text = str(ack).rstrip("\r") + "|" + escape(reason[:80]) + "\r"
    return text + f"ERR||MSH^1|207^{ERROR_TEXT['207']}^HL70357|E||||{escape(reason)}\r"
