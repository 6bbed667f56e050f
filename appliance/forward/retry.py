"""Retry policy (pure): what a C-STORE outcome means, and how long to wait before retrying.

Classes follow PS3.4 B.2.3 and forward.md: Success and warnings (B0xx) are delivered;
out of resources (A7xx), association failures and timeouts are transient and retried with
exponential backoff and jitter (so a PACS coming back is not stormed); A9xx, Cxxx, 0122
and other failures are permanent for this destination and go to the dead letters.
"""

from __future__ import annotations

import random
from enum import Enum

from appliance import status


class Outcome(Enum):
    DELIVERED = "delivered"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


def classify(code: int) -> Outcome:
    """The meaning of a C-STORE response status for the forwarder."""
    if code == status.SUCCESS or code in status.WARNING_RANGE:
        return Outcome.DELIVERED
    if code in status.OUT_OF_RESOURCES_RANGE:
        return Outcome.TRANSIENT
    return Outcome.PERMANENT


def backoff(
    attempts: int, initial: float, maximum: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait after ``attempts`` failures: initial * 2^(n-1), capped, jittered.

    The jitter draws from [0.5, 1.0] of the capped value, so many rows (or appliances)
    failing together spread their retries instead of coming back in step.
    """
    n = max(1, attempts)
    capped = min(maximum, initial * (2 ** min(n - 1, 62)))
    r = rng.random() if rng is not None else random.random()
    return capped * (0.5 + 0.5 * r)


def describe(code: int) -> str:
    """A short human-readable name of a C-STORE status, for last_error and the log."""
    if code == status.SUCCESS:
        return "success"
    if code in status.WARNING_RANGE:
        return f"warning 0x{code:04X}"
    if code in status.OUT_OF_RESOURCES_RANGE:
        return f"out of resources 0x{code:04X}"
    if code in status.DATASET_MISMATCH_RANGE:
        return f"data set does not match SOP class 0x{code:04X}"
    if code in status.CANNOT_UNDERSTAND_RANGE:
        return f"cannot understand 0x{code:04X}"
    if code == status.SOP_CLASS_NOT_SUPPORTED:
        return "SOP class not supported 0x0122"
    return f"failure 0x{code:04X}"
