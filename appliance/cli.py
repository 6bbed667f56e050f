"""The ``appliance`` command line: serve, status, config check."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import ssl
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

from appliance import __version__, app, backup, notify, statuskey
from appliance import config as config_mod
from appliance.cliargs import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_OK,
    Context,
    Handler,
    Registrar,
    load_config,
)
from appliance.cliargs import add_common as _add_common
from appliance.dicom import tls
from appliance.dicom.echo import echo
from appliance.errors import ApplianceError, ConfigError
from appliance.server import ALL_PARTS, Appliance

log = logging.getLogger("appliance")

ENV_TOKEN = "APPLIANCE_TOKEN"


def build_parser(
    commands: Sequence[Registrar] = app.COMMANDS,
) -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    """The argument parser for every subcommand, and the handler of each command."""
    parser = argparse.ArgumentParser(
        prog="appliance",
        description="DICOM Appliance: modality worklist, MPPS, print, store-and-forward, web UI.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the appliance (DICOM listener and web server)")
    _add_common(serve)
    serve.add_argument("--host", metavar="ADDR", help="bind both listeners to this address")
    serve.add_argument(
        "--only", choices=("dicom", "web"), help="run only one part (for separate systemd units)"
    )
    serve.add_argument("--log-level", choices=config_mod.LOG_LEVELS, help="override logging.level")

    status = sub.add_parser("status", help="ask a running appliance what runs")
    _add_common(status)
    status.add_argument("--json", action="store_true", help="print the raw health report")
    status.add_argument(
        "--token",
        metavar="TOKEN",
        help="API token for the full report (default: $APPLIANCE_TOKEN, else the running "
        "box's DATA_DIR/status.key; without either only up or down is shown)",
    )

    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", metavar="ACTION")
    check = cfg_sub.add_parser("check", help="validate a configuration file and exit")
    check.add_argument("file", type=Path)
    cfg_sub.add_parser("settings", help="list every setting with its documentation")

    handlers: dict[str, Handler] = {"serve": cmd_serve, "status": cmd_status, "config": cmd_config}
    for register in commands:
        handlers.update(register(sub, _add_common))
    return parser, handlers


LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def _setup_logging(cfg: config_mod.Config) -> None:
    """Log lines to stderr (journald keeps them under systemd), and to a file rotated by
    size when ``logging.file`` is set (relative to the data directory)."""
    level = getattr(logging, cfg.logging.level)
    logging.basicConfig(stream=sys.stderr, level=level, format=LOG_FORMAT)
    root = logging.getLogger()
    root.setLevel(level)
    if cfg.logging.file:
        path = cfg.data_dir / Path(cfg.logging.file).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = RotatingFileHandler(
            path,
            maxBytes=cfg.logging.max_mb * 1024 * 1024,
            backupCount=cfg.logging.backups,
            encoding="utf-8",
        )
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)


def cmd_serve(args: argparse.Namespace, _ctx: Context) -> int:
    """Run until SIGTERM or Ctrl-C, then stop everything cleanly."""
    cfg = load_config(args)
    _setup_logging(cfg)
    backup.hold_serve_lock(cfg.data_dir)  # until exit: `appliance restore` refuses meanwhile
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    only = (args.only,) if args.only else ALL_PARTS
    box = Appliance(cfg, only=only)
    try:
        box.start()
    except OSError as exc:
        log.error("cannot start: %s", exc)
        box.stop()
        return EXIT_FAILURE
    statuskey.write_ports(
        cfg.data_dir,
        {"dicom": box.dicom_port, "dicom_tls": box.dicom_tls_port, "web": box.web_port,
         "web_http": box.web_http_port},
    )  # fmt: skip
    tls = f"DICOM TLS on port {box.dicom_tls_port}; " if box.dicom_tls_port else ""
    scheme = "https" if cfg.web.https else "http"
    urls = " or ".join(f"{scheme}://{h}:{box.web_port}/" for h in _addresses(cfg.web.host))
    if box.web_http_port:
        tls += f"plain HTTP on port {box.web_http_port} redirects there; "
    print(
        f"appliance: DICOM {cfg.dicom.ae_title} on port {box.dicom_port}, "
        f"web on {urls} ({tls}data in {cfg.data_dir})",
        file=sys.stderr,
        flush=True,
    )
    supervision = notify.supervise(box)  # systemd: READY=1 now, then watchdog pings
    try:
        while not stop.wait(0.5):
            pass
    finally:
        supervision.stopping()
        box.stop()
    return EXIT_OK


def _addresses(host: str) -> list[str]:
    """Where a person can open the page: the bound address, or for "all interfaces" the
    box's own address on the network (if it has one) and this machine's loopback."""
    if host not in ("0.0.0.0", "::", ""):
        return [host]
    out = []
    with contextlib.suppress(OSError):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.255.255.255", 1))  # no packet is sent: picks the route only
            out.append(probe.getsockname()[0])
    return [a for a in out if not a.startswith("127.")] + ["127.0.0.1"]


def _local(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def _status_context(cfg: config_mod.Config) -> ssl.SSLContext | None:
    """Toward the box's own HTTPS port: only its certificate is trusted (the status key
    goes out as a Bearer token, so not to whoever else answers on that port)."""
    if not cfg.web.https:
        return None
    try:
        return tls.pinned_client_context(tls.web_certificate(cfg))
    except (OSError, ssl.SSLError):  # not this box's data folder: up or down only
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx


def cmd_status(args: argparse.Namespace, _ctx: Context) -> int:
    """Print what a running appliance reports at /healthz, plus a C-ECHO of its listener.

    /healthz gives each part's state only with a token: ``--token``, ``$APPLIANCE_TOKEN``
    or the status key the box wrote to its data directory; else only up or down.
    """
    cfg = load_config(args)
    # The ports the running box wrote, unless given on the command line.
    running = statuskey.read_ports(cfg.data_dir)
    web_port = cfg.web.port if args.web_port is not None else running.get("web", cfg.web.port)
    dicom_port = (
        cfg.dicom.port if args.dicom_port is not None else running.get("dicom", cfg.dicom.port)
    )
    scheme = "https" if cfg.web.https else "http"
    url = f"{scheme}://{_local(cfg.web.host)}:{web_port}/healthz"
    token = args.token or os.environ.get(ENV_TOKEN) or statuskey.read(cfg.data_dir)
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5, context=_status_context(cfg)) as resp:
            report = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        report = json.loads(exc.read() or b"{}")
    except (urllib.error.URLError, OSError) as exc:
        print(f"appliance is not running (no answer at {url}: {exc})")
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK if report.get("status") == "ok" else EXIT_FAILURE
    if "services" in report:
        print(f"appliance: {report.get('status')} (up {report.get('uptime_s')} s)")
    else:
        print(
            f"appliance: {report.get('status')} (details need --token, ${ENV_TOKEN} or read "
            f"access to {cfg.data_dir / statuskey.FILE_NAME})"
        )
    for name, part in report.get("services", {}).items():
        flat = {k: v for k, v in part.items() if k != "state" and not isinstance(v, dict)}
        extra = ", ".join(f"{k}={_brief(v)}" for k, v in flat.items())
        print(f"  {name:<12} {part.get('state'):<18} {extra}")
        for key, value in part.items():
            if isinstance(value, dict):
                for sub, detail in value.items():
                    if detail not in (None, "", [], {}):
                        print(f"    {key}.{sub}: {_brief(detail)}")
    echo = _echo(_local(cfg.dicom.host), dicom_port, cfg.dicom.ae_title)
    print(f"  C-ECHO {cfg.dicom.ae_title}@{dicom_port}: {echo}")
    return EXIT_OK if report.get("status") == "ok" else EXIT_FAILURE


def _brief(value: Any) -> str:
    """A health value in words: a mapping as ``key=value`` pairs, a list by its items."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={_brief(v)}" for k, v in value.items() if v not in (None, "", []))
    if isinstance(value, list):
        return "; ".join(_brief(v) for v in value) or "none"
    return str(value)


def _echo(host: str, port: int, ae_title: str) -> str:
    return echo(host, port, ae_title, "APPLIANCE-CLI", timeout=5.0)[1]


def cmd_config(args: argparse.Namespace, _ctx: Context) -> int:
    """``config check FILE`` and ``config settings``."""
    if args.config_command == "check":
        cfg = config_mod.load(args.file)
        print(
            f"{args.file}: ok (AE {cfg.dicom.ae_title}, DICOM port {cfg.dicom.port}, "
            f"web port {cfg.web.port}, {len(cfg.devices)} devices, "
            f"{len(cfg.destinations)} destinations, {len(cfg.printers)} printers)"
        )
        return EXIT_OK
    if args.config_command == "settings":
        for section, key, doc in config_mod.documented_settings():
            name = f"{section}.{key}" if section else key
            print(f"{name:<32} {doc}")
        return EXIT_OK
    print("usage: appliance config {check FILE | settings}", file=sys.stderr)
    return EXIT_CONFIG


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``appliance`` console script."""
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_CONFIG
    try:
        return handlers[args.command](args, Context(open_store=app.open_store))
    except ConfigError as exc:
        print(f"appliance: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ApplianceError as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return EXIT_FAILURE
