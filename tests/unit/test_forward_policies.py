"""Routing and retry policies (pure)."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from appliance import status
from appliance.config import DestinationSettings
from appliance.forward import retry, routing

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"


def dest(name: str, **rules: object) -> DestinationSettings:
    return DestinationSettings(name=name, ae_title="P", host="h", **rules)  # type: ignore[arg-type]


def test_no_rule_takes_everything() -> None:
    assert routing.route([dest("a"), dest("b")], "CT1", "CT", CT) == ["a", "b"]


def test_every_non_empty_rule_must_match() -> None:
    dests = [
        dest("ct", modalities=("CT",)),
        dest("ct1", from_ae=("CT1",), modalities=("CT",)),
        dest("mr-class", sop_classes=(MR,)),
    ]
    assert routing.route(dests, "CT1", "CT", CT) == ["ct", "ct1"]
    assert routing.route(dests, "CT2", "ct", CT) == ["ct"]
    assert routing.route(dests, "CT1", "MR", MR) == ["mr-class"]
    assert routing.route(dests, "CT1", "", CT) == []


def test_classify_follows_ps3_4() -> None:
    assert retry.classify(status.SUCCESS) is retry.Outcome.DELIVERED
    assert retry.classify(status.COERCION_OF_DATA_ELEMENTS) is retry.Outcome.DELIVERED
    assert retry.classify(status.ELEMENTS_DISCARDED) is retry.Outcome.DELIVERED
    assert retry.classify(status.OUT_OF_RESOURCES) is retry.Outcome.TRANSIENT
    assert retry.classify(0xA7FF) is retry.Outcome.TRANSIENT
    for code in (
        status.DATASET_DOES_NOT_MATCH_SOP_CLASS,
        status.CANNOT_UNDERSTAND,
        0xCFFF,
        status.SOP_CLASS_NOT_SUPPORTED,
        status.NOT_AUTHORIZED,
    ):
        assert retry.classify(code) is retry.Outcome.PERMANENT, hex(code)


@given(
    attempts=st.integers(min_value=0, max_value=10_000),
    initial=st.floats(min_value=0.01, max_value=100),
    factor=st.floats(min_value=1, max_value=1000),
    seed=st.integers(),
)
def test_backoff_is_bounded_and_jittered(
    attempts: int, initial: float, factor: float, seed: int
) -> None:
    maximum = initial * factor
    d = retry.backoff(attempts, initial, maximum, random.Random(seed))
    capped = min(maximum, initial * 2.0 ** min(max(0, attempts - 1), 62))
    assert 0.5 * capped - 1e-9 <= d <= capped + 1e-9


def test_backoff_grows_exponentially_until_the_cap() -> None:
    rng = random.Random(1)
    upper = [retry.backoff(n, 1.0, 60.0, _Fixed(1.0)) for n in range(1, 9)]
    assert upper == [1, 2, 4, 8, 16, 32, 60, 60]
    spread = {round(retry.backoff(5, 1.0, 60.0, rng), 3) for _ in range(20)}
    assert len(spread) > 10  # jitter: failures do not come back in step


class _Fixed(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value
