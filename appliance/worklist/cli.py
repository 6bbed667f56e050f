"""``appliance worklist import FILE`` and ``appliance worklist export``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from appliance.cliargs import Context, Handler, load_config
from appliance.clock import Clock
from appliance.worklist import exchange
from appliance.worklist.repo import WorklistRepo


def register(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> dict[str, Handler]:
    """Add the ``worklist`` command and its actions."""
    wl = sub.add_parser("worklist", help="import or export scheduled procedure steps")
    actions = wl.add_subparsers(dest="worklist_command", metavar="ACTION")
    imp = actions.add_parser("import", help="schedule the steps of a DICOM JSON or CSV file")
    add_common(imp)
    imp.add_argument("file", type=Path)
    imp.add_argument("--format", choices=("json", "csv"), help="default: from the file name")
    exp = actions.add_parser("export", help="write scheduled steps as DICOM JSON or CSV")
    add_common(exp)
    exp.add_argument("--format", choices=("json", "csv"), default="json")
    exp.add_argument("--from", dest="first", type=date.fromisoformat, metavar="YYYY-MM-DD")
    exp.add_argument("--to", dest="last", type=date.fromisoformat, metavar="YYYY-MM-DD")
    exp.add_argument("-o", "--output", type=Path, help="file to write (default: standard output)")
    return {"worklist": run}


def run(args: argparse.Namespace, ctx: Context) -> int:
    if args.worklist_command not in ("import", "export"):
        print("usage: appliance worklist {import FILE | export}", file=sys.stderr)
        return 2
    cfg = load_config(args)
    store = ctx.open_store(cfg.data_dir)
    repo = WorklistRepo(store, Clock(cfg.clinic.time_zone).today)
    try:
        if args.worklist_command == "import":
            fmt = args.format or ("csv" if args.file.suffix.lower() == ".csv" else "json")
            text = args.file.read_text(encoding="utf-8-sig")
            report = (exchange.import_csv if fmt == "csv" else exchange.import_json)(
                repo, text, actor="cli"
            )
            for line in report.lines():
                print(line)
            return 0 if not report.errors else 1
        text = (exchange.export_csv if args.format == "csv" else exchange.export_json)(
            repo, args.first, args.last
        )
        if args.output:
            args.output.write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
        return 0
    finally:
        store.close()
