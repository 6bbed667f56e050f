"""The printers in the database: what the admin's Printers page edits and the Print SCP uses.

Printers work as devices and destinations do (``appliance/managed.py``): the file's
``[[printers]]`` are written over the table at every start and are read-only on the web;
printers added on the web are kept. With no printer at all, films go to the built-in
prints folder (``DEFAULT``). The print service reads the live list (``Live``) before it
picks a printer, so an edit counts from the next film on, without a restart; another
process's edit within ``appliance.live.REFRESH_S`` seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from appliance import audit
from appliance.config import Config, PrinterSettings, validate_printer
from appliance.db import Store
from appliance.errors import NotFound, ValidationError
from appliance.live import LiveList
from appliance.managed import ManagedTable

DEFAULT = PrinterSettings(name="folder", uri="folder:prints/out")
VERSION_KEY = "printers_version"


TABLE = ManagedTable(
    table="printers",
    key="name",
    noun="printer",
    fields=("name", "uri"),
    encode=lambda p: [p.name, p.uri],
    decode=lambda row: PrinterSettings(name=row["name"], uri=row["uri"]),
    order="managed_by = 'web', position, name",  # the file's order, then the web's
    version_key=VERSION_KEY,
    positioned=True,
    check=validate_printer,
)


MAX_URI = 512


def validate(printer: PrinterSettings) -> PrinterSettings:
    """The same rules as ``[[printers]]`` in the file, and an address of at most
    ``MAX_URI`` printable characters; ValidationError names the field."""
    if len(printer.uri) > MAX_URI:
        raise ValidationError("uri", f"is longer than {MAX_URI} characters")
    if not printer.uri.isprintable():
        raise ValidationError("uri", "must not hold control characters")
    validated: PrinterSettings = TABLE.validate(printer)
    return validated


def effective(
    entries: tuple[PrinterSettings, ...] | list[PrinterSettings],
) -> tuple[PrinterSettings, ...]:
    """The printers films may go to: the table's, else the built-in prints folder."""
    return tuple(entries) or (DEFAULT,)


class Live(LiveList[PrinterSettings]):
    """The printer list one process works with (``appliance.live.LiveList``)."""

    def __init__(self, store: Store) -> None:
        super().__init__(store, TABLE)


def rows(store: Store) -> list[dict[str, Any]]:
    """Every stored printer (with ``managed_by``), in the live list's order."""
    return TABLE.rows(store)


def get(store: Store, name: str) -> dict[str, Any]:
    found = [r for r in rows(store) if r["name"] == name]
    if not found:
        raise NotFound(f"no printer {name!r}")
    return found[0]


def inside_data_folder(printer: PrinterSettings, data_dir: Path) -> bool:
    """False for a ``folder:`` printer whose folder (relative ones under ``data_dir``, as
    the print service resolves them) lies outside ``data_dir``; True for any other."""
    scheme, _, rest = printer.uri.partition(":")
    if scheme != "folder":
        return True
    base = Path(data_dir).resolve()
    path = Path(rest)
    target = (path if path.is_absolute() else base / path).resolve()
    return target != base and target.is_relative_to(base)


def in_use(config: Config) -> dict[str, str]:
    """Printer name -> the print profile (its AE title) that names it in the file."""
    return {p.printer: p.ae_title or config.dicom.ae_title
            for p in config.print_profiles if p.printer}  # fmt: skip


def _not_in_use(name: str, in_use: dict[str, str]) -> None:
    if name in in_use:
        raise ValidationError(
            "name", f"is the printer of print profile {in_use[name]} (change the profile first)"
        )


def save(
    store: Store,
    printer: PrinterSettings,
    original: str | None = None,
    in_use: dict[str, str] | None = None,
    actor: str = "system",
    source: str = "",
) -> PrinterSettings:
    """Add a printer (original None) or change one; file-managed ones are read-only.
    ``in_use``: printer name -> the print profile naming it (such a printer keeps its name)."""
    printer = validate(printer)
    if original is not None and original != printer.name:
        _not_in_use(original, in_use or {})
    with store.write() as db:
        TABLE.put(db, printer, original)
        action = "printer-add" if original is None else "printer-change"
        detail = printer.uri + (f", was {original}" if original not in (None, printer.name) else "")
        audit.record(db, actor, action, f"printer {printer.name}", detail, source)
    return printer


def delete(
    store: Store,
    name: str,
    in_use: dict[str, str] | None = None,
    actor: str = "system",
    source: str = "",
) -> None:
    """Remove a web-managed printer that no print profile names; its jobs stay in history."""
    with store.write() as db:
        TABLE._editable(db, name)
        _not_in_use(name, in_use or {})
        TABLE.remove(db, name)
        audit.record(db, actor, "printer-delete", f"printer {name}", "", source)
