"""Routing (pure): which destinations an instance goes to, by calling AE, modality, SOP class.

A destination with no rule takes everything; with rules, an instance must match every
non-empty list (any value within a list). With no destination at all nothing is queued.
"""

from __future__ import annotations

from collections.abc import Iterable

from appliance.config import DestinationSettings


def matches(dest: DestinationSettings, calling_ae: str, modality: str, sop_class: str) -> bool:
    """True when the instance passes every non-empty rule list of the destination."""
    if dest.from_ae and calling_ae.strip() not in dest.from_ae:
        return False
    if dest.modalities and modality.strip().upper() not in dest.modalities:
        return False
    return not (dest.sop_classes and sop_class not in dest.sop_classes)


def route(
    destinations: Iterable[DestinationSettings], calling_ae: str, modality: str, sop_class: str
) -> list[str]:
    """Names of the destinations the instance goes to, in configuration order."""
    return [d.name for d in destinations if matches(d, calling_ae, modality, sop_class)]
