"""What every ``appliance`` subcommand shares: the common options, the configuration they
give, exit codes, and the ``Context`` a command gets (how to open the database).

A leaf of the core, so the services' CLI modules (``worklist/cli.py``, ...) import it
without importing ``appliance.cli`` (which imports them through ``appliance.app``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance import config as config_mod
from appliance.db import Store

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


@dataclass(frozen=True)
class Context:
    """Handed to every command: ``open_store(data_dir)`` opens the database with every
    component's migrations applied (``appliance.app.open_store``)."""

    open_store: Callable[[Path], Store]


Handler = Callable[[argparse.Namespace, Context], int]
Registrar = Callable[[Any, Callable[[argparse.ArgumentParser], None]], dict[str, Handler]]
"""``register(subparsers, add_common)``: adds a command's parsers, returns its handlers."""


def add_common(p: argparse.ArgumentParser) -> None:
    """--config, --data-dir and the port overrides, on every command that reads them."""
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"TOML configuration file (default: ${config_mod.ENV_CONFIG}, else built-in defaults)",
    )
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="data directory (database, spool/, prints/); default ./appliance-data",
    )
    p.add_argument("--dicom-port", type=int, metavar="PORT", help="override dicom.port")
    p.add_argument("--dicom-tls-port", type=int, metavar="PORT", help="override dicom.tls_port")
    p.add_argument("--web-port", type=int, metavar="PORT", help="override web.port")
    p.add_argument(
        "--http-port", type=int, metavar="PORT", help="override web.http_port (the redirect)"
    )


def load_config(args: argparse.Namespace) -> config_mod.Config:
    """Configuration from --config / $APPLIANCE_CONFIG plus command-line overrides."""
    cfg = config_mod.load(getattr(args, "config", None))
    host = getattr(args, "host", None)
    return config_mod.with_overrides(
        cfg,
        data_dir=getattr(args, "data_dir", None),
        dicom_port=getattr(args, "dicom_port", None),
        dicom_tls_port=getattr(args, "dicom_tls_port", None),
        web_port=getattr(args, "web_port", None),
        web_http_port=getattr(args, "http_port", None),
        dicom_host=host,
        web_host=host,
        log_level=getattr(args, "log_level", None),
    )
