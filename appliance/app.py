"""The composition root: every part of the box, listed once.

Adding a component is a line here: its migration set in ``MIGRATIONS``, a DICOM service
in ``SERVICES``, a listener of its own in ``LISTENERS``, a command in ``COMMANDS``, a
page group in ``BLUEPRINTS``. Nothing below imports this module; ``server`` (the
lifecycle) and ``cli`` take what they start from here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask
from sqlite_utils.migrations import Migrations

import web
from appliance import accounts, accounts_cli, backup_cli, catalog, destinations, devices
from appliance import migrations as core_migrations
from appliance.cliargs import Registrar
from appliance.db import Store
from appliance.forward import cli as forward_cli
from appliance.forward.queue import migrations as forward_migrations
from appliance.forward.service import ForwardService
from appliance.hl7 import cli as hl7_cli
from appliance.hl7.schema import migrations as hl7_migrations
from appliance.hl7.service import Hl7Service
from appliance.parts import OwnListener, Parts, ServiceFactory
from appliance.printing.migrations import printing as printing_migrations
from appliance.printing.service import PrintService
from appliance.qr.index import migrations as qr_migrations
from appliance.qr.scp import QueryRetrieveService
from appliance.runtime import Runtime
from appliance.worklist import cli as worklist_cli
from appliance.worklist.schema import migrations as worklist_migrations
from appliance.worklist.scp import WorklistService
from web import (
    admin,
    api,
    auth,
    board,
    dicomweb,
    health_page,
    help_pages,
    prints,
    queues,
    steps,
    studies,
)
from web import destinations as destination_pages
from web import hl7 as hl7_pages

# Applied in this order at every start (``core`` first); never reorder applied sets.
MIGRATIONS: list[Migrations] = [
    core_migrations.core,
    worklist_migrations,
    forward_migrations,
    qr_migrations,
    printing_migrations,
    accounts.migrations,
    devices.migrations,
    catalog.migrations,
    destinations.migrations,
    hl7_migrations,
]

# The DICOM services on the shared listener, in the order their contexts are added.
SERVICES: list[ServiceFactory] = [
    WorklistService,
    ForwardService,
    PrintService,
    QueryRetrieveService,
]

# Listeners of their own, started with the DICOM part when their section enables them.
LISTENERS: list[OwnListener] = [
    OwnListener("hl7", lambda config: config.hl7.enabled, Hl7Service),
]

# Subcommands beside serve, status and config (``appliance worklist ...``).
COMMANDS: list[Registrar] = [
    worklist_cli.register,
    accounts_cli.register,
    forward_cli.register,
    backup_cli.register,
    hl7_cli.register,
]

# The web pages and the API, one blueprint per page group.
BLUEPRINTS: list[Blueprint] = [
    auth.bp,
    board.bp,
    steps.bp,
    admin.bp,
    prints.bp,
    queues.bp,
    destination_pages.bp,
    hl7_pages.bp,
    health_page.bp,
    help_pages.bp,
    api.bp,
    dicomweb.bp,
    studies.bp,
]


# The Admin menu of every page: (label, endpoint), in this order.
ADMIN_MENU: list[tuple[str, str | None]] = [
    ("Devices", "admin.devices"),
    ("Users", "admin.users"),
    ("Procedure catalog", "admin.catalog"),
    ("Audit log", "admin.audit"),
    ("Printers", "prints.printers"),
    ("Destinations", "queues.index"),
    ("HL7", "hl7.index"),
    ("Backup", "admin.backup"),
]


def open_store(data_dir: Path) -> Store:
    """The database in ``data_dir`` with every component's migrations applied."""
    return core_migrations.open_store(data_dir, MIGRATIONS)


def web_app(runtime: Runtime, **options: Any) -> Flask:
    """The Flask app with every blueprint (``web.create_app``'s options); nothing written
    until ``web.start(app)``."""
    return web.create_app(runtime, BLUEPRINTS, ADMIN_MENU, **options)


def _serving_web_app(runtime: Runtime, health: Callable[[], dict[str, Any]], key: str) -> Flask:
    return web.start(web_app(runtime, health=health, health_key=key))


PARTS = Parts(
    open_store=open_store, services=SERVICES, listeners=LISTENERS, web_app=_serving_web_app
)
