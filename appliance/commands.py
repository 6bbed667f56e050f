"""Subcommands contributed by the services (``appliance worklist ...`` and the like).

Each entry of ``REGISTRARS`` adds its parsers; ``HANDLERS`` maps a command to its function.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from appliance import accounts_cli, backup_cli
from appliance.forward import cli as forward_cli
from appliance.hl7 import cli as hl7_cli
from appliance.worklist import cli as worklist_cli

Handler = Callable[[argparse.Namespace], int]
Registrar = Callable[[Any, Callable[[argparse.ArgumentParser], None]], dict[str, Handler]]
HANDLERS: dict[str, Handler] = {}
REGISTRARS: list[Registrar] = [
    worklist_cli.register,
    accounts_cli.register,
    forward_cli.register,
    backup_cli.register,
    hl7_cli.register,
]


def add_subcommands(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Let every registered service add its subcommands to the parser."""
    for register in REGISTRARS:
        HANDLERS.update(register(sub, add_common))
