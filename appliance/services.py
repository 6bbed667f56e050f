"""The DICOM services on the shared listener: each factory takes the Runtime."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from appliance.forward.service import ForwardService
from appliance.printing.service import make_service as make_print_service
from appliance.qr.scp import QueryRetrieveService
from appliance.worklist.scp import WorklistService

FACTORIES: list[Callable[[Any], Any]] = [
    WorklistService,
    ForwardService,
    make_print_service,
    QueryRetrieveService,
]
