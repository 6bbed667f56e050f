"""``appliance forward ...``: the queues from the shell, beside (or without) a running box.

``status`` per destination; ``waiting DEST`` with why each item waits; ``dead`` letters
with reasons (both the first ``--limit N``, 100 by default, or ``--all``, and a last line
saying how many were left out); ``retry [DEST]`` makes waiting items due now;
``resend ID...`` puts dead letters back; ``echo DEST`` tries a C-ECHO. A running appliance's workers pick changes
up within a second (they read the same SQLite database).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from appliance.forward import queue

DEFAULT_LIMIT = 100


def register(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> dict[str, Any]:
    """Add the ``forward`` command and its actions."""
    fwd = sub.add_parser("forward", help="store-and-forward queues: status, retry, resend")
    actions = fwd.add_subparsers(dest="forward_command", metavar="ACTION")
    add_common(actions.add_parser("status", help="per destination: waiting, dead, last error"))
    waiting = actions.add_parser("waiting", help="waiting items of a destination and why")
    add_common(waiting)
    waiting.add_argument("destination")
    _add_limit(waiting, "oldest")
    dead = actions.add_parser("dead", help="dead letters with their reasons")
    add_common(dead)
    dead.add_argument("destination", nargs="?")
    _add_limit(dead, "newest")
    retry_now = actions.add_parser("retry", help="make waiting items due now")
    add_common(retry_now)
    retry_now.add_argument("destination", nargs="?")
    resend = actions.add_parser("resend", help="put dead letters (by id) back in the queue")
    add_common(resend)
    resend.add_argument("ids", type=int, nargs="+")
    route = actions.add_parser(
        "route", help="send every unrouted image (no destination took it) to a destination"
    )
    add_common(route)
    route.add_argument("destination")
    echo = actions.add_parser("echo", help="C-ECHO a destination")
    add_common(echo)
    echo.add_argument("destination")
    return {"forward": run}


def _limit(raw: str) -> int:
    """The value of ``--limit``: a whole number from 1."""
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1, not {raw!r}")
    return int(raw)


def _add_limit(parser: argparse.ArgumentParser, which: str) -> None:
    how_many = parser.add_mutually_exclusive_group()
    how_many.add_argument("--limit", type=_limit, default=DEFAULT_LIMIT, metavar="N",
                          help=f"show the {which} N (default {DEFAULT_LIMIT})")  # fmt: skip
    how_many.add_argument("--all", action="store_true", help="show every one")


def _left_out(shown: int, total: int, what: str) -> None:
    """The last line when rows were left out: how many of how many, how to see the rest."""
    if shown < total:
        print(f"{shown:,} of {total:,} {what} shown; --limit N shows more, --all every one")


def _age(t: float | None, now: float) -> str:
    return "-" if t is None else f"{now - t:.0f} s ago"


def run(args: argparse.Namespace) -> int:
    from appliance.cli import load_config
    from appliance.db import open_store

    cfg = load_config(args)
    command = args.forward_command
    if command is None:
        print(
            "usage: appliance forward {status|waiting|dead|retry|resend|route|echo}",
            file=sys.stderr,
        )
        return 2
    store = open_store(cfg.data_dir)
    now = time.time()
    try:
        if command == "echo":
            return _echo(cfg, _destinations(cfg, store), args.destination)
        if command == "status":
            names = [d.name for d in _destinations(cfg, store)]
            if not names:
                print("no destination is configured: received images are sent nowhere")
            unrouted = queue.unrouted_count(store)
            if unrouted:
                print(
                    f"unrouted: {unrouted} received images no destination took "
                    "(appliance forward route DEST sends them)"
                )
            for row in queue.summary(store, names, now, cfg.forward.stall_minutes * 60):
                print(
                    f"{row['destination']:<16} waiting {row['waiting']:<6} held {row['held']:<5} "
                    f"dead {row['dead']:<5} delivered {row['delivered']:<7} "
                    f"last minute {row['delivered_last_minute']:<5} "
                    f"oldest {_age(row['oldest_waiting_at'], now)}"
                )
                if row["stalled_s"] is not None:
                    print(
                        f"{'':<16} STALLED: no progress for {row['stalled_s'] / 60:.0f} min "
                        "while items wait"
                    )
                if row["last_error"]:
                    print(f"{'':<16} last error: {row['last_error']}")
        elif command == "waiting":
            limit = None if args.all else args.limit
            with store.read():  # the rows and their count from one snapshot
                items = queue.waiting_items(store, args.destination, limit)
                total = queue.waiting_count(store, args.destination)
            for item in items:
                due = max(0.0, item["next_attempt"] - now)
                held = "HELD " if item["held"] else ""
                behind = f" (destination: {item['waits_for']})" if item["waits_for"] else ""
                tried = item["attempts"] if item["held"] else "-"  # not tried: no "attempts 0"
                print(
                    f"{item['id']:>8} {item['modality'] or '-':<4} attempts {tried:<3} "
                    f"next in {due:.0f} s  {held}{item['why']}{behind}"
                )
            _left_out(len(items), total, "waiting items (oldest first)")
        elif command == "dead":
            limit = None if args.all else args.limit
            with store.read():
                items = queue.dead_letters(store, args.destination, limit)
                total = queue.dead_count(store, args.destination)
            for item in items:
                print(f"{item['id']:>8} {item['destination']:<16} {item['reason']}")
            _left_out(len(items), total, "dead letters (newest first)")
        elif command == "retry":
            print(f"{queue.retry_now(store, args.destination)} waiting items are due now")
        elif command == "route":
            if args.destination not in {d.name for d in _destinations(cfg, store)}:
                print(f"no destination named {args.destination!r}", file=sys.stderr)
                return 2
            n = queue.route_unrouted(store, args.destination)
            print(f"{n} unrouted images are queued to {args.destination}")
        elif command == "resend":
            print(f"{queue.resend(store, args.ids)} of {len(args.ids)} items are queued again")
    finally:
        store.close()
    return 0


def _destinations(cfg: Any, store: Any) -> list[Any]:
    """The destinations the appliance works with: the database's (the file's synced in at
    every start, and the web's), then any the file declares that no start synced yet."""
    from appliance import destinations

    known = destinations.load(store)
    names = {d.name for d in known}
    return [*known, *(d for d in cfg.destinations if d.name not in names)]


def _echo(cfg: Any, dests: list[Any], name: str) -> int:
    from appliance.forward.sender import echo

    dest = next((d for d in dests if d.name == name), None)
    if dest is None:
        print(f"no destination named {name!r}", file=sys.stderr)
        return 2
    ok, detail = echo(dest, cfg.dicom)
    print(f"C-ECHO {dest.ae_title}@{dest.host}:{dest.port}: {detail}")
    return 0 if ok else 1
