"""The migration sets of the services, in the order they are applied (after ``core``)."""

from __future__ import annotations

from sqlite_utils.migrations import Migrations

from appliance import accounts, catalog, destinations, devices
from appliance.forward.queue import migrations as forward
from appliance.hl7.schema import migrations as hl7
from appliance.printing.migrations import printing
from appliance.qr.index import migrations as qr
from appliance.worklist.schema import migrations as worklist

SETS: list[Migrations] = [
    worklist,
    forward,
    qr,
    printing,
    accounts.migrations,
    devices.migrations,
    catalog.migrations,
    destinations.migrations,
    hl7,
]
