"""The running appliance: one DICOM listener, the web server, the services' workers.

``Appliance.start()`` returns once both listeners are bound (ports read back, so port 0
works for tests); ``stop()`` closes them and the workers within a few seconds.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pynetdicom import AE, DEFAULT_TRANSFER_SYNTAXES, _config, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from appliance import access, statuskey
from appliance.app import PARTS
from appliance.config import Config
from appliance.db import DB_FILENAME
from appliance.dicom import compat, edge, tls
from appliance.parts import Listener, Parts, Service
from appliance.runtime import Runtime
from appliance.webserver import WebServer

log = logging.getLogger(__name__)

ALL_PARTS = ("dicom", "web")


def configure_pynetdicom(config: Config) -> None:
    """Set pynetdicom's global options; the only place that touches ``_config``."""
    debug = config.logging.level == "DEBUG"
    # The standard handlers log identifiers and datasets; keep them for DEBUG only.
    _config.LOG_HANDLER_LEVEL = "standard" if debug else "none"
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if debug else logging.WARNING)
    # Received datasets are written to a temporary file instead of held in memory.
    _config.STORE_RECV_CHUNKED_DATASET = True
    # Spooled files are sent as stored, streamed from disk, never decoded and re-encoded.
    _config.STORE_SEND_CHUNKED_DATASET = True
    # Keep element values as sent; do not coerce or fix up on decode.
    _config.LOG_RESPONSE_IDENTIFIERS = debug
    _config.LOG_REQUEST_IDENTIFIERS = debug


class ContextsCopiedCheaply(list):  # type: ignore[type-arg]
    """The listener's supported presentation contexts, which pynetdicom deep-copies for
    every association: some 150 storage classes with every transfer syntax, 40-60 ms of
    CPU before the A-ASSOCIATE-AC. Only a context's transfer syntax list is mutable state
    (UIDs are immutable strings), so a shallow copy with its own list is the same copy."""

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return [compat.copy_context(cx) for cx in self]


def handle_echo(event: evt.Event, rt: Runtime) -> int:
    """C-ECHO: answered for every calling AE that got an association (PS3.4 A)."""
    log.info("C-ECHO from %s", event.assoc.requestor.ae_title)
    return 0x0000


def _shutdown_promptly(server: Any) -> None:
    """Stop a socketserver loop without waiting out its 0.5 s poll: once the shutdown flag
    is set, a throw-away connection wakes the selector."""
    stopper = threading.Thread(target=server.shutdown, name="dicom-shutdown")
    stopper.start()
    deadline = time.monotonic() + 1.0
    while not compat.shutdown_requested(server) and time.monotonic() < deadline:
        time.sleep(0.001)
    host, port = server.server_address[:2]
    with contextlib.suppress(OSError):
        socket.create_connection(
            ("127.0.0.1" if host in ("0.0.0.0", "") else host, port), timeout=0.2
        ).close()
    stopper.join(timeout=5)


def handle_requested(event: evt.Event, called_titles: frozenset[str]) -> None:
    """Answer to the extra called AE titles services declare (print profiles); any other
    called AE title is still rejected by ``require_called_aet`` (PS3.8 reason 7)."""
    primitive = event.assoc.requestor.primitive
    called = str(primitive.called_ae_title).strip() if primitive is not None else ""
    if called in called_titles:
        event.assoc.acceptor.ae_title = called


Route = tuple[Callable[..., Any], list[Any]]


def dispatch(event: evt.Event, routes: dict[str, Route]) -> Any:
    """Hand an intervention event to the service whose context it arrived on."""
    handler, args = routes[event.context.abstract_syntax]
    return handler(event, *args)


def bind_handlers(services: list[Service], own: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """pynetdicom bindings for all services on one AE.

    pynetdicom allows one handler per intervention event (N-CREATE, N-ACTION...), but
    several services answer the same DIMSE message for different SOP classes (print and
    MPPS both take N-CREATE). Each intervention event is therefore bound to ``dispatch``,
    which routes by the negotiated abstract syntax of the presentation context.
    """
    bindings = list(own)
    routes: dict[Any, dict[str, Route]] = {}
    for service in services:
        uids = [cx[0] for cx in service.contexts()]
        for binding in service.handlers():
            event, handler = binding[0], binding[1]
            args = list(binding[2]) if len(binding) > 2 else []
            if not event.is_intervention:
                bindings.append(binding)
                continue
            table = routes.setdefault(event, {})
            for uid in uids:
                if uid in table:
                    raise RuntimeError(f"two services handle {event.name} for {uid}")
                table[uid] = (handler, args)
    bindings.extend((event, dispatch, [table]) for event, table in routes.items())
    return bindings


class Appliance:
    """The whole box in one process (or just its ``dicom`` or ``web`` part)."""

    def __init__(
        self, config: Config, only: tuple[str, ...] = ALL_PARTS, parts: Parts = PARTS
    ) -> None:
        self.config = config
        self.only = only
        self.parts = parts  # what it opens and starts: the composition root's lists
        self.runtime: Runtime | None = None
        self.services: list[Service] = []
        self._dicom_server: Any = None
        self._web_server: Any = None
        self.dicom_port: int | None = None
        self._dicom_tls_server: Any = None
        self.dicom_tls_port: int | None = None
        self.tls_fingerprint = ""
        self.tls_error = ""
        self.web_port: int | None = None
        self.web_http_port: int | None = None  # the plain-HTTP redirect, with HTTPS
        self._health_extra: list[Callable[[], dict[str, Any]]] = []
        self.listeners: list[Listener] = []  # listeners of their own (HL7) now running

    # -- lifecycle -------------------------------------------------------

    def start(self) -> Appliance:
        """Open the database, bind the listeners, start workers; returns when ready."""
        store = self.parts.open_store(self.config.data_dir)
        self.runtime = Runtime.create(self.config, store)
        self.runtime.sync()
        try:
            if "dicom" in self.only:
                self._start_dicom()
            if "web" in self.only:
                self._start_web()
            if "dicom" in self.only:
                self._start_listeners()
        except BaseException:
            self.stop()
            raise
        log.info(
            "appliance ready: dicom %s port %s, web port %s",
            self.config.dicom.ae_title,
            self.dicom_port,
            self.web_port,
        )
        return self

    def _start_listeners(self) -> None:
        assert self.runtime is not None
        for own in self.parts.listeners:
            if own.enabled(self.config):
                listener = own.make(self.runtime)
                listener.start()
                self.listeners.append(listener)

    def _start_dicom(self) -> None:
        assert self.runtime is not None
        cfg = self.config.dicom
        configure_pynetdicom(self.config)
        self.services = [make(self.runtime) for make in self.parts.services]
        ae = AE(ae_title=cfg.ae_title)
        ae.maximum_pdu_size = cfg.max_pdu
        ae.acse_timeout = cfg.acse_timeout
        ae.dimse_timeout = cfg.dimse_timeout
        ae.network_timeout = cfg.network_timeout
        ae.maximum_associations = cfg.max_associations
        # Reject associations addressed to another AE title (PS3.8 A-ASSOCIATE-RJ reason 7).
        ae.require_called_aet = True
        ae.add_supported_context(Verification)
        called_titles: set[str] = set()
        for service in self.services:
            options: list[dict[str, Any]]
            for uid, syntaxes, *options in service.contexts():
                # An optional third item gives SCP/SCU role selection (PS3.7 D.3.3.4),
                # e.g. {"scu_role": True, "scp_role": True} for Storage Commitment reports.
                roles = options[0] if options else {}
                compat.add_supported_context(
                    ae,
                    uid,
                    DEFAULT_TRANSFER_SYNTAXES if syntaxes is None else syntaxes,
                    scu_role=roles.get("scu_role"),
                    scp_role=roles.get("scp_role"),
                )
            called_titles.update(getattr(service, "called_ae_titles", list)())
        own = [
            (evt.EVT_C_ECHO, handle_echo, [self.runtime]),
            (evt.EVT_REJECTED, access.audit_rejected, [self.runtime.access]),
        ]
        handlers = bind_handlers(self.services, own)
        if called_titles - {cfg.ae_title}:
            handlers.append((evt.EVT_REQUESTED, handle_requested, [frozenset(called_titles)]))
        self.runtime.access.bind(ae)
        for service in self.services:
            service.start()
        gate = self.runtime.access
        self._dicom_server = edge.start_server(
            ae, (cfg.host, cfg.port), cfg, evt_handlers=handlers, gate=gate
        )
        self._dicom_server.contexts = ContextsCopiedCheaply(self._dicom_server.contexts)
        self.dicom_port = self._dicom_server.server_address[1]
        if cfg.tls:
            self._start_dicom_tls(ae, handlers)

    def _start_dicom_tls(self, ae: AE, handlers: list[tuple[Any, ...]]) -> None:
        """The same services on the TLS port; a port that cannot be bound leaves the box
        serving plain DICOM, degraded and saying why (never silently without TLS)."""
        cfg = self.config.dicom
        try:
            cert, key = tls.certificate_files(self.config.data_dir, cfg.tls_cert, cfg.tls_key)
            context = tls.server_context(cert, key, cfg.tls_ca)
            server = edge.start_server(
                ae, (cfg.host, cfg.tls_port), cfg, evt_handlers=handlers, tls=context,
                gate=self.runtime.access if self.runtime else None,
            )  # fmt: skip
        except (OSError, ValueError) as exc:
            self.tls_error = f"{type(exc).__name__}: {exc}"
            log.error("DICOM TLS listener on port %s not started: %s", cfg.tls_port, exc)
            return
        server.contexts = ContextsCopiedCheaply(server.contexts)
        self._dicom_tls_server = server
        self.dicom_tls_port = server.server_address[1]
        self.tls_fingerprint = tls.fingerprint(cert)

    def _start_web(self) -> None:
        assert self.runtime is not None
        key = statuskey.write(self.config.data_dir)
        app = self.parts.web_app(self.runtime, self.health, key)
        self._web_server = WebServer(app, self.config.web, *tls.web_context(self.config)).start()
        self.web_port, self.web_http_port = self._web_server.port, self._web_server.http_port

    def stop(self) -> None:
        """Stop listeners and workers and close the database; safe to call twice."""
        while self.listeners:
            self.listeners.pop().stop()
        for server in (self._dicom_server, self._dicom_tls_server):
            if server is not None:
                # Open associations end with the listener, as they would with the process.
                for assoc in server.active_associations:
                    assoc.abort()
                _shutdown_promptly(server)
        self._dicom_server = self._dicom_tls_server = None
        for service in reversed(self.services):
            try:
                service.stop()
            except Exception:  # keep stopping the others; the error is logged
                log.exception("service %s did not stop cleanly", service.name)
        self.services = []
        if self._web_server is not None:
            self._web_server.stop()
            self._web_server = None
        if self.runtime is not None:
            self.runtime.store.close()
        log.info("appliance stopped")

    def listener(self, name: str) -> Any:
        """The running listener of its own called ``name`` (``"hl7"``), or None."""
        return next((one for one in self.listeners if one.name == name), None)

    def __enter__(self) -> Appliance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- health ----------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Each part's state, for /healthz and ``appliance status``."""
        parts: dict[str, Any] = {}
        if "dicom" in self.only:
            server = self._dicom_server
            parts["dicom"] = {
                "state": "running" if server is not None else "stopped",
                "ae_title": self.config.dicom.ae_title,
                "port": self.dicom_port,
                "associations": len(server.active_associations) if server else 0,
                **(server.connection_counts() if server else {}),
            }
            if self.config.dicom.tls:
                parts["dicom_tls"] = (
                    {"state": "running", "port": self.dicom_tls_port,
                     "fingerprint_sha256": self.tls_fingerprint}
                    if self._dicom_tls_server is not None
                    else {"state": f"failed: {self.tls_error}" if self.tls_error else "stopped"}
                )  # fmt: skip
            for service in self.services:
                parts[service.name] = service.health()
            for listener in self.listeners:
                parts[listener.name] = listener.health()
        else:
            parts["dicom"] = {"state": "not in this process"}
        if "web" in self.only:
            parts["web"] = self._web_server.health() if self._web_server else {"state": "stopped"}
        else:
            parts["web"] = {"state": "not in this process"}
        parts["database"] = self._database_health()
        ok = all(p.get("state") in ("running", "not in this process") for p in parts.values())
        uptime = time.time() - self.runtime.started_at if self.runtime else 0.0
        return {
            "status": "ok" if ok else "degraded",
            "uptime_s": round(uptime, 1),
            "services": parts,
        }

    def _database_health(self) -> dict[str, Any]:
        if self.runtime is None:
            return {"state": "stopped"}
        try:
            last = self.runtime.store.query(
                "SELECT at FROM audit WHERE action IN ('backup', 'backup-download') "
                "ORDER BY id DESC LIMIT 1"
            )
        except Exception as exc:  # reported, not raised: healthz must answer
            return {"state": "failed", "error": type(exc).__name__}
        path = self.config.data_dir / DB_FILENAME
        size = 0
        for name in (path, path.with_name(path.name + "-wal")):
            with contextlib.suppress(OSError):
                size += name.stat().st_size
        ago = None
        if last:
            when = datetime.fromisoformat(last[0]["at"].replace("Z", "+00:00"))
            ago = max(0, int(time.time() - when.timestamp()))
        # The database with its write-ahead log; when the last backup was taken (None:
        # never, by `appliance backup` or the admin page's download).
        return {"state": "running", "size_mb": round(size / 1e6, 1), "last_backup_s_ago": ago}
