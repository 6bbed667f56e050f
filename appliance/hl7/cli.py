"""``appliance hl7 send FILE``: send the HL7 messages of a file over MLLP, print each ACK."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hl7.mllp import open_hl7_connection

from appliance.cliargs import Context, Handler, load_config
from appliance.config import Config
from appliance.errors import NotFound
from appliance.hl7 import charsets, inbox, outbound

EXIT_OK = 0
EXIT_NOT_ACCEPTED = 1
EXIT_USAGE = 2


def register(sub: Any, add_common: Callable[[argparse.ArgumentParser], None]) -> dict[str, Handler]:
    """Add the ``hl7`` command and its ``send`` action."""
    cmd = sub.add_parser("hl7", help="HL7 v2 tools: inject a message for testing")
    actions = cmd.add_subparsers(dest="hl7_command", metavar="ACTION")
    send = actions.add_parser(
        "send", help="send the messages of a file (one per MSH) to the HL7 listener, print ACKs"
    )
    add_common(send)
    send.add_argument("file", type=Path, help="HL7 v2 messages, segments ending in CR or LF")
    send.add_argument("--host", default="127.0.0.1", help="listener address (default 127.0.0.1)")
    send.add_argument("--port", type=int, help="listener port (default: hl7.port)")
    send.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each ACK")
    messages = actions.add_parser(
        "messages", help="the last messages received, with their ACK code and error"
    )
    add_common(messages)
    messages.add_argument("--limit", type=int, default=20)
    messages.add_argument("--failed", action="store_true", help="only those not answered AA")
    outbox = actions.add_parser("outbox", help="status messages to the RIS: state and reason")
    add_common(outbox)
    outbox.add_argument("--limit", type=int, default=20)
    outbox.add_argument("--state", choices=("waiting", "sent", "dead"))
    again = actions.add_parser("resend", help="send an outbox message (sent or dead) again")
    add_common(again)
    again.add_argument("pk", type=int, help="the message number `appliance hl7 outbox` shows")
    return {"hl7": run}


def split_messages(data: bytes) -> list[bytes]:
    """The messages of a file: segments end in CR, a new message starts at each MSH."""
    data = re.sub(rb"\r\n|\n", b"\r", data).strip(b"\r \t\x0b\x1c")
    parts = re.split(rb"\r(?=MSH)", data)
    return [p.rstrip(b"\r") + b"\r" for p in parts if p.strip()]


async def send_all(host: str, port: int, messages: list[bytes], timeout: float) -> list[bytes]:
    reader, writer = await asyncio.wait_for(open_hl7_connection(host, port), timeout)
    answers = []
    try:
        for message in messages:
            writer.writeblock(message)
            await writer.drain()
            answers.append(await asyncio.wait_for(reader.readblock(), timeout))
    finally:
        writer.close()
    return answers


def describe(answer: bytes, default: str) -> tuple[str, list[str]]:
    """The MSA-1 code and the lines to print (MSA and ERR segments) of an ACK."""
    try:
        text = charsets.decode(answer, default)
    except (charsets.CharsetError, ValueError, IndexError):
        text = answer.decode("latin-1")
    lines = [s for s in text.split("\r") if s.startswith(("MSA", "ERR"))]
    code = lines[0].split("|")[1] if lines and lines[0].count("|") else ""
    return code, lines


def run(args: argparse.Namespace, ctx: Context) -> int:
    if args.hl7_command not in ("send", "messages", "outbox", "resend"):
        print("usage: appliance hl7 {send FILE | messages | outbox | resend PK}", file=sys.stderr)
        return EXIT_USAGE
    cfg = load_config(args)
    if args.hl7_command != "send":
        return show(args, cfg, ctx)
    try:
        messages = split_messages(args.file.read_bytes())
    except OSError as exc:
        print(f"{args.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    if not messages:
        print(f"{args.file}: no HL7 message (no MSH segment)", file=sys.stderr)
        return EXIT_USAGE
    port = args.port if args.port is not None else cfg.hl7.port
    try:
        answers = asyncio.run(send_all(args.host, port, messages, args.timeout))
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        print(f"no answer from {args.host}:{port}: {exc or type(exc).__name__}", file=sys.stderr)
        return EXIT_NOT_ACCEPTED
    accepted = True
    for answer in answers:
        code, lines = describe(answer, cfg.hl7.charset)
        accepted = accepted and code == "AA"
        print("\n".join(lines))
    return EXIT_OK if accepted else EXIT_NOT_ACCEPTED


def show(args: argparse.Namespace, cfg: Config, ctx: Context) -> int:
    """``messages``, ``outbox`` and ``resend``: read (or requeue) in the box's database."""
    store = ctx.open_store(cfg.data_dir)
    try:
        if args.hl7_command == "messages":
            for m in inbox.recent(store, args.limit, args.failed):
                dup = f" (+{m['duplicates']} repeats)" if m["duplicates"] else ""
                print(f"{m['received_at']}  {m['ack_code']}  {m['message_type']:<8} "
                      f"{m['sender']} {m['control_id']}{dup}  {m['error']}".rstrip())  # fmt: skip
        elif args.hl7_command == "outbox":
            for o in outbound.recent(store, args.limit, args.state):
                print(f"{o['pk']:>6}  {o['state']:<7} {o['destination']}  step {o['step_pk']} "
                      f"{o['status']}  attempts {o['attempts']}  {o['last_error']}".rstrip())  # fmt: skip
        else:
            try:
                outbound.resend(store, args.pk)
            except NotFound as exc:
                print(str(exc), file=sys.stderr)
                return EXIT_NOT_ACCEPTED
            print(f"outbox message {args.pk} queued again")
        return EXIT_OK
    finally:
        store.close()
