"""Subcommands contributed by the services (``appliance worklist ...`` and the like).

Each entry of ``REGISTRARS`` adds its parsers; ``HANDLERS`` maps a command to its function.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

Handler = Callable[[argparse.Namespace], int]
HANDLERS: dict[str, Handler] = {}
REGISTRARS: list[
    Callable[[Any, Callable[[argparse.ArgumentParser], None]], dict[str, Handler]]
] = []


def add_subcommands(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Let every registered service add its subcommands to the parser."""
    for register in REGISTRARS:
        HANDLERS.update(register(sub, add_common))
