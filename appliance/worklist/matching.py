"""C-FIND matching of worklist items, PS3.4 C.2.2.2: pure functions, no I/O.

A query is parsed once into ``Key`` objects; each stored item (see ``model.Item``) is then
tested with ``matches``. Names are matched on decoded Unicode, case- and
accent-insensitively, on any component group. ``narrowing`` derives the SQL conditions
that shrink the candidate set before any item is built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.valuerep import PersonName

from appliance import identifiers
from appliance.worklist.model import CODE_KEYS, SPS_KEYS, TOP_KEYS, Item, dt_key, fold

# (date keyword, time keyword) pairs matched as one date-time range (PS3.4 C.2.2.2.5.1).
COMBINED = (
    ("ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime"),
    ("ScheduledProcedureStepEndDate", "ScheduledProcedureStepEndTime"),
)
SUPPORTED = {
    "": frozenset(TOP_KEYS),
    "ScheduledProcedureStepSequence": frozenset(SPS_KEYS),
    "RequestedProcedureCodeSequence": frozenset(CODE_KEYS),
    "ScheduledProtocolCodeSequence": frozenset(CODE_KEYS),
}
NO_WILDCARD_VRS = ("DA", "TM", "DT", "UI")
TEXT_VRS = ("AE", "AS", "CS", "DS", "IS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR")


class QueryError(ValueError):
    """The identifier cannot be served (bad value for its VR, unknown structure)."""


@dataclass
class Key:
    """One matching/return key of a query: a value, or for a sequence the keys of its item."""

    keyword: str
    vr: str
    value: str = ""
    items: list[Key] | None = None  # sequence: keys of its (single) query item
    tag: int = 0

    @property
    def universal(self) -> bool:
        if self.items is not None:
            return all(k.universal for k in self.items)
        v = self.value.strip()
        return v == "" or v == "*"


@dataclass
class Query:
    """A parsed C-FIND identifier."""

    keys: list[Key]
    unsupported: list[str] = field(default_factory=list)
    charset: str = ""

    def find(self, *path: str) -> Key | None:
        keys: list[Key] | None = self.keys
        found: Key | None = None
        for name in path:
            found = next((k for k in keys or [] if k.keyword == name), None)
            if found is None:
                return None
            keys = found.items
        return found


def _value_str(value: Any, vr: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (MultiValue, list, tuple)):
        return "\\".join(_value_str(v, vr) for v in value)
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, bytes):
        raise QueryError(f"value of VR {vr} could not be decoded")
    return str(value)


def _parse_keys(ds: Dataset, level: str, unsupported: list[str]) -> list[Key]:
    keys: list[Key] = []
    supported = SUPPORTED.get(level, frozenset())
    for elem in ds:
        tag = int(elem.tag)
        if elem.tag.group in (0x0000, 0x0002) or elem.tag.element == 0x0000:
            continue
        keyword = keyword_for_tag(tag) or f"({elem.tag.group:04X},{elem.tag.element:04X})"
        if keyword == "SpecificCharacterSet":
            continue
        vr = elem.VR or (dictionary_VR(tag) if keyword_for_tag(tag) else "UN")
        if elem.tag.is_private or keyword not in supported and level in SUPPORTED:
            unsupported.append(keyword if level == "" else f"{level}.{keyword}")
        if vr == "SQ":
            seq = elem.value or Sequence()
            if len(seq) > 1:
                raise QueryError(f"{keyword} holds {len(seq)} items; a query item must be one")
            sub = _parse_keys(seq[0], keyword, unsupported) if len(seq) else []
            keys.append(Key(keyword, "SQ", items=sub, tag=tag))
        else:
            keys.append(Key(keyword, vr, _value_str(elem.value, vr), tag=tag))
    return keys


def parse(ds: Dataset) -> Query:
    """Parse a C-FIND identifier (already decoded with its character set) into keys."""
    unsupported: list[str] = []
    keys = _parse_keys(ds, "", unsupported)
    for key in keys:
        _check_syntax(key)
    return Query(keys, unsupported, str(ds.get("SpecificCharacterSet", "") or ""))


_DA_RANGE = re.compile(r"^(\d{8})?(-)?(\d{8})?$")
_TM_VALUE = re.compile(r"^\d{2}(:?\d{2}(:?\d{2}(\.\d{1,6})?)?)?$")


def _check_syntax(key: Key) -> None:
    """Reject values a matcher cannot interpret, so the SCP can answer with C-status."""
    if key.items is not None:
        for sub in key.items:
            _check_syntax(sub)
        return
    v = key.value.strip()
    if not v or v == "*":
        return
    if key.vr == "DA":
        if not _DA_RANGE.match(v.replace(".", "")) or v == "-":
            raise QueryError(f"{key.keyword}: {v!r} is not a date or date range")
    elif key.vr == "TM":
        for part in v.split("-"):
            if part and not _TM_VALUE.match(part):
                raise QueryError(f"{key.keyword}: {v!r} is not a time or time range")
        if v.count("-") > 1 or v == "-":
            raise QueryError(f"{key.keyword}: {v!r} is not a time or time range")
    elif key.vr == "UI":
        for uid in v.split("\\"):
            if not identifiers.is_uid(uid.strip("\0 ")):
                raise QueryError(f"{key.keyword}: {uid!r} is not a UID")


check_syntax = _check_syntax  # public: QIDO-RS builds its keys from a query string


# -- value normalisation --------------------------------------------------


def norm_time(value: str, upper: bool = False) -> str:
    """TM to HHMMSS.ffffff; missing parts filled with 0 (lower bound) or 9s (upper bound)."""
    v = value.replace(":", "").strip()
    main, _, frac = v.partition(".")
    fill = "235959" if upper else "000000"
    main = main + fill[len(main) :]
    frac = (frac + ("999999" if upper else "000000"))[:6]
    if upper and "." not in v and len(v) == 6:
        frac = "999999"
    return f"{main[:6]}.{frac}"


def _range(value: str) -> tuple[str | None, str | None]:
    if "-" in value:
        lo, _, hi = value.partition("-")
        return (lo or None), (hi or None)
    return value, value


class Glob:
    """A DICOM wildcard pattern (`*` any run, `?` one character) matched without backtracking.

    A regular expression built from `*` -> `.*` backtracks exponentially on patterns such as
    `************N??` (43 s against one name, holding the GIL); this matcher is the greedy
    two-pointer glob algorithm: at most len(pattern) * len(text) steps, usually linear.
    """

    __slots__ = ("pattern",)

    def __init__(self, pattern: str) -> None:
        self.pattern = re.sub(r"\*{2,}", "*", pattern)  # a run of `*` is one `*`

    def fullmatch(self, text: str) -> bool:
        p, t = self.pattern, text
        pi = ti = 0
        star = -1  # position in p after the last `*` seen
        mark = 0  # position in t where that `*` started to absorb
        while ti < len(t):
            if pi < len(p) and (p[pi] == "?" or p[pi] == t[ti]):
                pi += 1
                ti += 1
            elif pi < len(p) and p[pi] == "*":
                star = pi + 1
                mark = ti
                pi += 1
            elif star >= 0:
                mark += 1
                ti = mark
                pi = star
            else:
                return False
        while pi < len(p) and p[pi] == "*":
            pi += 1
        return pi == len(p)


@lru_cache(maxsize=512)
def _wildcard(pattern: str) -> Glob:
    return Glob(pattern)


def _strip_pn_group(group: str) -> str:
    return group.rstrip("^ ").strip()


def _pn_groups(value: str) -> list[str]:
    return [_strip_pn_group(g) for g in fold(value).split("=")]


def match_pn(query: str, stored: str) -> bool:
    """PN: case- and accent-insensitive, wildcards, any component group of the stored name."""
    stored_groups = [g for g in _pn_groups(stored) if g]
    if not stored_groups:
        return False
    for q in _pn_groups(query):
        if not q:
            continue
        rx = _wildcard(q) if ("*" in q or "?" in q) else None
        for g in stored_groups:
            if rx is None:
                if q == g:
                    return True
                continue
            # "Doe^*" must match a stored "Doe": pad absent trailing components.
            padded = g + "^" * max(0, q.count("^") - g.count("^"))
            if rx.fullmatch(g) or rx.fullmatch(padded):
                return True
    return False


def pn_search_key(stored: str) -> str:
    """A stored name as ``pn_prefixes`` are looked up in: its folded component groups
    (as ``match_pn`` compares them), each after a '='."""
    return "".join("=" + g for g in _pn_groups(stored) if g)


def pn_prefixes(query: str) -> list[str] | None:
    """The literal start of each component group of a PN query, folded: a name matches
    the query (``match_pn``) only when a group of its ``pn_search_key`` starts with one
    of them. None when a group starts with a wildcard (no narrowing is possible)."""
    out = []
    for q in (g for g in _pn_groups(query) if g):
        cut = min((i for i in (q.find("*"), q.find("?")) if i >= 0), default=len(q))
        # Trailing '^' may be padding that "Doe^*" adds to a stored "Doe".
        prefix = q[:cut].rstrip("^")
        if not prefix:
            return None
        out.append(prefix)
    return out or None


def match_text(query: str, stored: str) -> bool:
    """Single value or wildcard matching on a text value (any of a multi-valued stored value)."""
    values = [s.strip() for s in stored.split("\\")] if stored else []
    values = [v for v in values if v]
    if not values:
        return False
    alternatives = [q.strip() for q in query.split("\\")]
    for q in alternatives:
        if "*" in q or "?" in q:
            rx = _wildcard(q)
            if any(rx.fullmatch(v) for v in values):
                return True
        elif q in values:
            return True
    return False


def match_date(query: str, stored: str) -> bool:
    stored = stored.replace(".", "").strip()
    if not stored:
        return False
    lo, hi = _range(query.replace(".", "").strip())
    return (lo is None or stored >= lo) and (hi is None or stored <= hi)


def match_time(query: str, stored: str) -> bool:
    if not stored.strip():
        return False
    s = norm_time(stored)
    lo, hi = _range(query.strip())
    if "-" not in query and lo is not None:
        # A single time matches the stored times within its precision (1200 = 12:00:00-12:00:59).
        return norm_time(lo) <= s <= norm_time(lo, upper=True)
    return (lo is None or s >= norm_time(lo)) and (hi is None or s <= norm_time(hi, upper=True))


def match_uid(query: str, stored: str) -> bool:
    if not stored:
        return False
    return stored.strip("\0 ") in {u.strip("\0 ") for u in query.split("\\")}


def match_value(key: Key, stored: Any) -> bool:
    """Match one non-sequence key against a stored value (PS3.4 C.2.2.2.1-C.2.2.2.5)."""
    if key.universal:
        return True
    stored_s = "" if stored is None else str(stored)
    if key.vr == "PN":
        return match_pn(key.value, stored_s)
    if key.vr == "DA":
        return match_date(key.value, stored_s)
    if key.vr == "TM":
        return match_time(key.value, stored_s)
    if key.vr == "DT":
        return match_date(key.value, stored_s)
    if key.vr == "UI":
        return match_uid(key.value, stored_s)
    if key.vr in ("US", "SS", "UL", "SL", "IS", "DS", "FL", "FD"):
        try:
            return stored_s != "" and float(key.value) == float(stored_s)
        except ValueError:
            return False
    return match_text(key.value, stored_s)


def combined_bounds(date_q: str, time_q: str) -> tuple[str | None, str | None]:
    """The date-time range of a date key and a time key given together (PS3.4 C.2.2.2.5.1).

    ``20261124-20261125`` with ``0800-1200`` is 2026-11-24 08:00 to 2026-11-25 12:00;
    an open time end means the end (or start) of the day.
    """
    d_lo, d_hi = _range(date_q.replace(".", "").strip())
    if time_q.strip() in ("", "*"):
        t_lo, t_hi = None, None
    else:
        t_lo, t_hi = _range(time_q.strip())
        if "-" not in time_q:
            t_hi = t_lo
    lo = None if d_lo is None else d_lo + norm_time(t_lo or "000000")
    hi = None if d_hi is None else d_hi + norm_time(t_hi or "235959", upper=True)
    return lo, hi


def _match_combined(item: Item, date_key: Key, time_key: Key) -> bool:
    date_s = str(item.get(date_key.keyword, "") or "").replace(".", "").strip()
    time_s = str(item.get(time_key.keyword, "") or "").strip()
    if not date_s or not time_s:
        return False
    lo, hi = combined_bounds(date_key.value, time_key.value)
    stored = date_s + norm_time(time_s)
    return (lo is None or stored >= lo) and (hi is None or stored <= hi)


def match_keys(keys: list[Key], item: Item) -> bool:
    """True when every key matches the item (sequence keys: any stored item matches all subkeys)."""
    by_name = {k.keyword: k for k in keys}
    combined: set[str] = set()
    for date_kw, time_kw in COMBINED:
        d, t = by_name.get(date_kw), by_name.get(time_kw)
        if d is not None and t is not None and not d.universal and not t.universal:
            if not _match_combined(item, d, t):
                return False
            combined.update((date_kw, time_kw))
    for key in keys:
        if key.keyword in combined or key.universal:
            continue
        stored = item.get(key.keyword)
        if key.items is not None:
            seq = stored if isinstance(stored, list) else []
            if not any(match_keys(key.items, sub) for sub in seq):
                return False
        elif not match_value(key, stored):
            return False
    return True


def matches(query: Query, item: Item) -> bool:
    """True when the stored item matches every key of the query."""
    return match_keys(query.keys, item)


# -- SQL narrowing ---------------------------------------------------------


def literal(key: Key | None) -> str | None:
    """The key's value when it is a single literal (no wildcard, no list), else None."""
    if key is None or key.universal or key.items is not None:
        return None
    v = key.value.strip()
    if "\\" in v or (key.vr not in NO_WILDCARD_VRS and ("*" in v or "?" in v)):
        return None
    return v


def name_fragment(key: Key | None) -> str | None:
    """The longest literal piece of a name pattern, folded, for an ``instr`` pre-filter."""
    if key is None or key.universal or "=" in key.value:
        return None
    pieces = re.split(r"[*?^=]", fold(key.value))
    best = max((p.strip() for p in pieces), key=len, default="")
    return best or None


def narrowing_for(query: Query) -> dict[str, Any]:
    """Keyword arguments for ``repo.Narrowing`` derived from the query."""
    out: dict[str, Any] = {}
    sps = query.find("ScheduledProcedureStepSequence")
    if sps is not None and sps.items:
        sub = Query(sps.items)
        out["station_ae"] = literal(sub.find("ScheduledStationAETitle"))
        out["modality"] = literal(sub.find("Modality"))
        out["sps_id"] = literal(sub.find("ScheduledProcedureStepID"))
        date_k = sub.find("ScheduledProcedureStepStartDate")
        time_k = sub.find("ScheduledProcedureStepStartTime")
        if date_k is not None and not date_k.universal:
            time_v = time_k.value if time_k is not None and not time_k.universal else ""
            lo, hi = combined_bounds(date_k.value, time_v)
            out["start_from"] = dt_key(lo[:8], lo[8:]) if lo else None
            out["start_to"] = dt_key(hi[:8], hi[8:]) if hi else None
    out["accession_number"] = literal(query.find("AccessionNumber"))
    out["patient_id"] = literal(query.find("PatientID"))
    out["requested_procedure_id"] = literal(query.find("RequestedProcedureID"))
    study = query.find("StudyInstanceUID")
    if study is not None and not study.universal:
        out["study_uids"] = [u.strip("\0 ") for u in study.value.split("\\")]
    out["name_fragment"] = name_fragment(query.find("PatientName"))
    return {k: v for k, v in out.items() if v is not None}


# -- response ---------------------------------------------------------------


def _set(ds: Dataset, key: Key, value: Any) -> None:
    tag = key.tag or tag_for_keyword(key.keyword)
    if tag is None:
        return
    if value is None or value == "":
        ds.add_new(tag, key.vr, None)
    else:
        ds.add_new(tag, key.vr, value)


def project(keys: list[Key], item: Item) -> Dataset:
    """The response identifier: exactly the requested keys, with stored values or empty."""
    ds = Dataset()
    for key in keys:
        stored = item.get(key.keyword)
        if key.items is not None:
            seq = Sequence()
            for sub in stored if isinstance(stored, list) else []:
                seq.append(project(key.items, sub) if key.items else item_dataset(sub))
            ds.add_new(key.tag or tag_for_keyword(key.keyword) or 0, "SQ", seq)
        else:
            _set(ds, key, stored)
    return ds


def keys_for_item(item: Item) -> list[Key]:
    """Return keys for every stored attribute of an item (zero-length sequence key, PS3.4 C.2.2.1.3)."""
    keys = []
    for kw in item:
        tag = tag_for_keyword(kw)
        if tag is None:
            continue
        vr = dictionary_VR(tag)
        keys.append(Key(kw, vr, items=[] if vr == "SQ" else None, tag=tag))
    return keys


def item_dataset(item: Item) -> Dataset:
    """A whole stored item as a Dataset."""
    return project(keys_for_item(item), item)
