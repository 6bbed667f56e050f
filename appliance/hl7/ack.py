"""Original-mode acknowledgments: ACK with MSA and ERR segments (HL7 v2.5.1 2.9.2, 2.15.5).

Pure. The ACK answers the received message as python-hl7 parsed it, repeats its MSH-18 so the sender reads it in its own character set, and carries one ERR segment
per error: ERR-2 location, ERR-3 Table 0357 code, ERR-4 severity, ERR-8 the reason.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import hl7

from appliance.hl7.mapping import ERROR_TEXT, Location, escape, value

ACCEPT = "AA"
ERROR = "AE"
REJECT = "AR"


def _raw(msh: hl7.Segment, n: int) -> str:
    """MSH-n as received (components and escapes kept), '' when the segment is shorter."""
    return str(msh(n)) if len(msh) > n else ""


def build(
    received: hl7.Message,
    code: str,
    errors: Sequence[tuple[Location, str, str]] = (),
    application: str = "",
) -> str:
    """The ACK text for a received message: MSH, MSA (with MSA-3 for older readers), ERR.

    Written here rather than by python-hl7's ``create_ack``, which raises on an MSH
    without MSH-11/12 or with MSH-9 of one component: a message that short still gets
    its answer. MSH-3/4 and 5/6 swap, MSH-11/12 are repeated, MSH-18 too.
    """
    msh = received.segment("MSH")
    sender = escape(application) if application else _raw(msh, 5)
    fields = [  # MSH-3 to MSH-12
        sender, _raw(msh, 6), _raw(msh, 3), _raw(msh, 4), time.strftime("%Y%m%d%H%M%S"), "",
        f"ACK^{escape(value(msh, 9, 1, 2))}^ACK", hl7.generate_message_control_id(),
        _raw(msh, 11) or "P", _raw(msh, 12) or "2.5.1",
    ]  # fmt: skip
    if _raw(msh, 18):
        fields += ["", "", "", "", "", _raw(msh, 18)]
    msa = ["MSA", code, escape(value(msh, 10))]
    if errors:
        msa.append(escape(errors[0][2][:80]))
    text = "MSH|^~\\&|" + "|".join(fields) + "\r" + "|".join(msa) + "\r"
    for location, error_code, reason in errors:
        meaning = ERROR_TEXT.get(error_code, "")
        text += f"ERR||{location}|{error_code}^{meaning}^HL70357|E||||{escape(reason)}\r"
    return text


def bare_reject(reason: str) -> str:
    """An AR for bytes whose MSH cannot be read: nothing of the sender can be repeated."""
    base = hl7.parse("MSH|^~\\&|||||||ACK||P|2.5.1\r")
    return build(base, REJECT, [(Location("MSH", 1), "207", reason)])
