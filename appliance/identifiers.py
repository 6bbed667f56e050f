"""The two identifiers every part checks, checked one way: UIDs (PS3.5 9.1) and AE titles
(PS3.5 6.2, VR AE). Each ``*_problem`` function says why a value is not one (None when it
is); callers raise their own error (ConfigError, ValidationError, a DICOM status, an
A-ASSOCIATE-RJ) with that reason. Pure: no I/O, no imports of the appliance."""

from __future__ import annotations

import re

UID_MAX = 64
AE_TITLE_MAX = 16
# Components of digits joined by single dots; PS3.5 9.1 also forbids a leading zero in a
# component ("0" itself excepted): required of the UIDs the appliance makes and stores.
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_UID_STRICT = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
# The default repertoire (G0 of ISO 646, 0x20-0x7E) without the backslash (PS3.5 6.2).
_AE_CHARACTERS = re.compile(r"[\x20-\x5b\x5d-\x7e]*")


def uid_problem(value: str, strict: bool = False) -> str | None:
    """Why ``value`` is not a UID (digits and dots, at most 64 characters), or None;
    ``strict`` also refuses a component with a leading zero."""
    if not value:
        return "is empty"
    if len(value) > UID_MAX:
        return f"is longer than {UID_MAX} characters"
    if not (_UID_STRICT if strict else _UID).fullmatch(value):
        return "is not digits and dots" + (" without leading zeros" if strict else "")
    return None


def is_uid(value: str, strict: bool = False) -> bool:
    """True when ``value`` is a UID (see ``uid_problem``)."""
    return uid_problem(value, strict) is None


def ae_title_problem(value: str) -> str | None:
    """Why ``value`` is not an AE title, or None: 1-16 characters of the default
    repertoire, no backslash, no control character, not all spaces."""
    if not value.strip(" "):
        return "must not be empty"
    if len(value) > AE_TITLE_MAX:
        return f"{value!r} is longer than {AE_TITLE_MAX} characters"
    if not _AE_CHARACTERS.fullmatch(value):
        return f"{value!r} contains a backslash, a control character or a non-ASCII character"
    return None
