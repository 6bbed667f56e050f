"""QIDO-RS search requests (PS3.18 10.6) over the index of held instances: pure, no I/O.

A query string becomes the same matching keys a C-FIND identifier gives
(``worklist.matching``: wildcards, ranges, UID lists), narrowed and matched by
``qr.scp.Request`` as the Q/R SCP does. Attributes are named by keyword or by tag
(``00100010``); ``includefield`` (``all`` or attributes), ``limit``, ``offset`` and
``fuzzymatching`` (accepted, not supported: a Warning says so) are the other parameters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset

from appliance.qr import repo
from appliance.worklist import matching

RESOURCES = {"studies": "STUDY", "series": "SERIES", "instances": "IMAGE"}
PARAMETERS = frozenset(("includefield", "limit", "offset", "fuzzymatching"))
_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")

# Attributes returned by default, by level (PS3.18 tables 10.6.3-3, -4 and -5), as far
# as the index holds them; RetrieveURL and InstanceAvailability are added by the caller.
DEFAULT_RETURN = {
    "STUDY": [
        "StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy",
        "ReferringPhysicianName", "PatientName", "PatientID", "PatientBirthDate",
        "PatientSex", "StudyInstanceUID", "StudyID", "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances", "StudyDescription",
    ],
    "SERIES": [
        "Modality", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber",
        "NumberOfSeriesRelatedInstances",
    ],
    "IMAGE": ["SOPClassUID", "SOPInstanceUID", "InstanceNumber"],
}  # fmt: skip
OWN = ("RetrieveURL", "InstanceAvailability")
# Tag order of the levels' keys is JSON order (PS3.18 F.2: sorted by tag).


class QidoError(ValueError):
    """A search the service cannot run; ``key`` names the offending parameter."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass
class Search:
    """A parsed QIDO-RS request."""

    level: str
    keys: list[matching.Key]
    returned: list[str]
    limit: int
    offset: int = 0
    fuzzy: bool = False
    ignored: list[str] = field(default_factory=list)
    capped: bool = True  # the limit is the service's maximum, not the client's own

    def warnings(self) -> list[str]:
        """The Warning header texts (PS3.18 8.3.5.1, 10.6.3.3) for what was not done."""
        out = []
        if self.fuzzy:
            out.append(
                "The fuzzymatching parameter is not supported. "
                "Only literal matching has been performed."
            )
        if self.ignored:
            out.append(
                "The following attributes are not supported for matching and were ignored: "
                + ", ".join(self.ignored)
            )
        return out


def keyword_of(name: str) -> str:
    """The keyword a query parameter names (a keyword or an 8-digit hex tag); QidoError
    naming it when it is no attribute of the data dictionary."""
    if "." in name:
        raise QidoError(name, "sequence attributes cannot be matched (no nested search)")
    if _TAG.fullmatch(name):
        keyword = keyword_for_tag(int(name, 16))
        if not keyword:
            raise QidoError(name, "is not a tag of the DICOM data dictionary")
        return str(keyword)
    if tag_for_keyword(name) is None:
        raise QidoError(name, "is not a DICOM attribute keyword or tag")
    return name


def check_uid(value: str, what: str) -> str:
    """A UID from the path (PS3.5 9.1); QidoError naming the part otherwise."""
    if len(value) > 64 or not _UID.fullmatch(value):
        raise QidoError(what, f"{value[:70]!r} is not a UID")
    return value


def matchable(level: str) -> dict[str, int]:
    """keyword -> level index of the keys a search at ``level`` may match or return."""
    out: dict[str, int] = {}
    for n, lv in enumerate(repo.levels_upto(level)):
        for keyword in (*repo.ATTRIBUTES[lv], *repo.DERIVED[lv]):
            out[keyword] = n
    return out


def _positive(value: str, name: str) -> int:
    if not value.isdigit() or len(value) > 9:
        raise QidoError(name, f"{value[:20]!r} is not a non-negative integer")
    return int(value)


def parse(
    args: Iterable[tuple[str, str]],
    level: str,
    fixed: Mapping[str, str],
    max_results: int,
) -> Search:
    """The search ``args`` (query string pairs) ask for at ``level``; ``fixed`` are the
    UIDs of the path (StudyInstanceUID, SeriesInstanceUID) matched as well."""
    allowed = matchable(level)
    values: dict[str, str] = {}
    included: list[str] = []
    include_all = False
    limit, offset, fuzzy, ignored, capped = max_results, 0, False, [], True
    for name, value in args:
        if name == "includefield":
            for item in (v.strip() for v in value.split(",")):
                if item == "all":
                    include_all = True
                elif item:
                    included.append(keyword_of(item))
        elif name == "limit":
            asked = _positive(value, name)
            limit, capped = min(asked, max_results), asked > max_results
        elif name == "offset":
            offset = _positive(value, name)
        elif name == "fuzzymatching":
            if value not in ("true", "false"):
                raise QidoError(name, f"{value[:20]!r} is not true or false")
            fuzzy = value == "true"
        else:
            keyword = keyword_of(name)
            if keyword not in allowed:
                ignored.append(keyword)
                continue
            if keyword in values:
                raise QidoError(name, "is given twice")
            values[keyword] = value
    for keyword, uid in fixed.items():
        values[keyword] = uid
    keys = [_key(keyword, value) for keyword, value in values.items()]
    returned = list(allowed) if include_all else _default(level, fixed)
    for keyword in included:
        if keyword not in returned and keyword in allowed:
            returned.append(keyword)
    for keyword in values:
        if keyword not in returned:
            returned.append(keyword)
    return Search(level, keys, returned, limit, offset, fuzzy, ignored, capped)


def _default(level: str, fixed: Mapping[str, str]) -> list[str]:
    out: list[str] = []
    for lv in repo.levels_upto(level):
        if lv in DEFAULT_RETURN and (lv == level or level == "IMAGE" or not fixed):
            out.extend(DEFAULT_RETURN[lv])
    # The unique keys of the levels above, so a result can be retrieved.
    for lv in ("STUDY", "SERIES"):
        if repo.LEVELS.index(lv) <= repo.LEVELS.index(level) and repo.UNIQUE[lv] not in out:
            out.append(repo.UNIQUE[lv])
    return out


def _key(keyword: str, value: str) -> matching.Key:
    tag = int(tag_for_keyword(keyword) or 0)
    vr = str(dictionary_VR(tag))
    if vr == "UI":
        value = value.replace(",", "\\")  # PS3.18 8.3.4.1: a UID list, comma separated
    key = matching.Key(keyword, vr, value, tag=tag)
    try:
        matching.check_syntax(key)
    except matching.QueryError as exc:
        raise QidoError(keyword, str(exc).partition(": ")[2] or str(exc)) from exc
    return key


_NUMBER_VRS = frozenset(("IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"))
_FLOAT_VRS = frozenset(("DS", "FL", "FD"))
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def _json_value(vr: str, text: str) -> list[Any]:
    """The JSON Value array of a stored text (PS3.18 F.2.3: numbers for IS/DS and the
    binary number VRs, an object of component groups for PN, strings otherwise)."""
    parts = text.split("\\")
    if vr in _NUMBER_VRS:
        out: list[Any] = []
        for p in parts:
            p = p.strip()
            try:
                out.append(float(p) if vr in _FLOAT_VRS else int(p))
            except ValueError:
                out.append(None)
        return out
    if vr == "PN":
        return [
            {g: v for g, v in zip(_PN_GROUPS, p.split("="), strict=False) if v} or None
            for p in parts
        ]
    return parts


def entity_json(entity: Mapping[str, str], returned: list[str]) -> dict[str, Any]:
    """The attributes ``returned`` of one matching entity as DICOM JSON (PS3.18 F.2),
    written directly (a pydicom Dataset per result costs 0.5 ms); tag order."""
    out: dict[str, Any] = {}
    for keyword in returned:
        tag = int(tag_for_keyword(keyword) or 0)
        vr = str(dictionary_VR(tag))
        text = str(entity.get(keyword, "") or "")
        attr: dict[str, Any] = {"vr": vr}
        if text:
            attr["Value"] = _json_value(vr, text)
        out[f"{tag:08X}"] = attr
    return dict(sorted(out.items()))


def entity_dataset(entity: Mapping[str, str], returned: list[str]) -> Dataset:
    """The attributes ``returned`` of one matching entity (empty when not held)."""
    keys = []
    for keyword in returned:
        tag = int(tag_for_keyword(keyword) or 0)
        keys.append(matching.Key(keyword, str(dictionary_VR(tag)), tag=tag))
    return matching.project(keys, dict(entity))
