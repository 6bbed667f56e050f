"""The web server: the Flask app over HTTPS (cheroot), and a plain-HTTP redirect to it.

One process, two listeners at most: ``web.port`` serves the app over TLS 1.2+ (the DICOM
TLS certificate, or ``web.tls_cert``/``web.tls_key``); ``web.http_port`` answers every
plain-HTTP request with a redirect to the same path on the HTTPS port, and nothing else.
With ``web.https = false`` (tests, development) ``web.port`` serves the app in clear.

Bounds against hostile or broken clients, on top of cheroot's (request header size,
body size, a fixed thread pool, an epoll selector so the box may hold thousands of
descriptors):

- a new connection waits in the selector until it sends a byte, so idle sockets hold no
  worker thread; idle ones are closed after ``web.header_timeout``;
- the TLS handshake is stepped without blocking by the selector thread, not done in
  cheroot's accept loop (one silent client there would stall every other) nor in a
  worker; a connection reaches a worker once its handshake is done and its request has
  begun;
- the handshake, and then the request line and headers, must each arrive within
  ``web.header_timeout`` however slowly they trickle: past it the connection is shut
  down (under the blocked worker, for headers). A client trickling its headers holds a
  worker that long: more of them than ``web.threads`` delay others by at most that;
- at most ``web.max_connections`` connections at once, ``web.max_per_address`` from one
  address; one more is closed as soon as it is accepted.

cheroot's internals used here (``ConnectionManager._from_server_socket`` / ``_expire``,
``HTTPServer._connections``) were read from cheroot 11.1; ``tests/hostile/test_https_hostile.py``
fails if they change meaning.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cheroot import connections, server, wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024
SEND_TIMEOUT = 30.0  # a stalled reader of a response (per send, cheroot's socket timeout)
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253})(:\d{1,5})?$")


class _Limits:
    """Open connections (total and per address) and the deadlines of the ones still
    in their handshake or headers; shared by the selector thread and the workers."""

    def __init__(self, total: int, per_address: int, header_timeout: float) -> None:
        self.total, self.per_address, self.header_timeout = total, per_address, header_timeout
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}
        self._deadlines: dict[int, tuple[float, socket.socket, str]] = {}

    def admit(self, address: str) -> bool:
        with self._lock:
            if sum(self._open.values()) >= self.total or (
                self._open.get(address, 0) >= self.per_address
            ):
                return False
            self._open[address] = self._open.get(address, 0) + 1
            return True

    def release(self, address: str) -> None:
        with self._lock:
            left = self._open.get(address, 0) - 1
            if left > 0:
                self._open[address] = left
            else:
                self._open.pop(address, None)

    def open_count(self) -> int:
        with self._lock:
            return sum(self._open.values())

    def start(self, sock: socket.socket, address: str) -> None:
        """From now on the peer has header_timeout seconds in all."""
        with self._lock:
            self._deadlines[id(sock)] = (time.monotonic() + self.header_timeout, sock, address)

    def end(self, sock: socket.socket) -> None:
        with self._lock:
            self._deadlines.pop(id(sock), None)

    @contextmanager
    def deadline(self, sock: socket.socket, address: str) -> Iterator[None]:
        self.start(sock, address)
        try:
            yield
        finally:
            self.end(sock)

    def reap(self) -> None:
        """Shut down the sockets past their deadline: a blocked worker, or the selector,
        then sees the end of the stream and closes the connection."""
        now = time.monotonic()
        with self._lock:
            late = [(k, s, a) for k, (d, s, a) in self._deadlines.items() if d < now]
            for key, _, _ in late:
                del self._deadlines[key]
        for _, sock, address in late:
            log.warning(
                "web: %s sent no complete request within %.0f s; closed",
                address,
                self.header_timeout,
            )
            try:  # the plain socket's shutdown: an SSLSocket's would drop its state under
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the reading worker
            except OSError:
                pass


class _LazyTLS(BuiltinSSLAdapter):  # type: ignore[misc]
    """Wraps accepted sockets without a handshake: the selector thread drives it."""

    def __init__(self, context: ssl.SSLContext, cert: Path, key: Path) -> None:
        super().__init__(str(cert), str(key))
        self.context = context

    def wrap(self, sock: socket.socket) -> tuple[ssl.SSLSocket, dict[str, str]]:
        tls = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return tls, {"HTTPS": "on"}


class _Request(server.HTTPRequest):  # type: ignore[misc]
    def parse_request(self) -> None:
        limits: _Limits = self.server.limits
        with limits.deadline(self.conn.socket, self.conn.remote_addr or "?"):
            super().parse_request()

    def respond(self) -> None:
        """The app's answer; a body it did not read (a 413 from Flask, a refusal before
        the upload) is read and dropped, at most max_request_body_size, so that a client
        still sending reads the answer instead of a reset; then the connection closes."""
        super().respond()
        left = int(getattr(self.rfile, "remaining", 0) or 0)
        if left:
            self.close_connection = True
            while left > 0:
                chunk = self.rfile.read(min(left, 256 * 1024))
                if not chunk:
                    break
                left -= len(chunk)


HANDSHAKE_DONE, HANDSHAKE_AGAIN, HANDSHAKE_FAILED = "done", "again", "failed"
_GONE = ("UNEXPECTED_EOF_WHILE_READING", "EOF occurred in violation of protocol")


class _Connection(server.HTTPConnection):  # type: ignore[misc]
    """Counts itself against the limits; its TLS handshake is stepped without blocking."""

    RequestHandlerClass = _Request
    handshaken = False
    admitted = ""

    def handshake_step(self) -> str:
        """One non-blocking step of the TLS handshake, in the selector thread."""
        address = self.remote_addr or "?"
        try:
            self.socket.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return HANDSHAKE_AGAIN
        except ssl.SSLError as exc:
            reason = exc.reason or str(exc)
            if reason == "HTTP_REQUEST":
                log.warning("web: %s sent plain HTTP to the HTTPS port; refused", address)
                self._plain_refusal()
            elif reason in _GONE or isinstance(exc, ssl.SSLEOFError):
                log.info("web: %s left during the TLS handshake", address)
            else:
                log.warning("web: TLS handshake with %s failed: %s", address, reason)
            return HANDSHAKE_FAILED
        except OSError as exc:
            log.info("web: %s left during the TLS handshake (%s)", address, exc)
            return HANDSHAKE_FAILED
        self.handshaken = True
        self.server.limits.end(self.socket)
        self.socket.settimeout(SEND_TIMEOUT)
        return HANDSHAKE_DONE

    def _plain_refusal(self) -> None:
        """A short plain-text 400 on the raw socket, for someone who typed http://."""
        text = b"This port speaks HTTPS only: open https://... instead.\r\n"
        head = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n"
        try:
            socket.socket.send(self.socket, head + b"Content-Length: %d\r\n\r\n" % len(text) + text)
        except OSError:
            pass

    def close(self) -> None:
        self.server.limits.end(self.socket)
        if self.admitted:
            self.server.limits.release(self.admitted)
            self.admitted = ""
        super().close()


class _Manager(connections.ConnectionManager):  # type: ignore[misc]
    """New connections wait in the selector, not in a worker, until they send a byte;
    a TLS one until its handshake is done and a request has begun."""

    def _from_server_socket(self, server_socket: socket.socket) -> None:
        conn = super()._from_server_socket(server_socket)  # type: ignore[misc]
        if conn is None:
            return None
        address = conn.remote_addr or "?"
        if not self.server.limits.admit(address):
            log.warning("web: too many connections (from %s); one more closed", address)
            conn.close()
            return None
        conn.admitted = address
        if isinstance(conn.socket, ssl.SSLSocket):
            conn.socket.setblocking(False)
            self.server.limits.start(conn.socket, address)
        self.put(conn)
        return None

    def _expire(self, threshold: float) -> None:
        self.server.limits.reap()
        super()._expire(threshold=time.time() - self.server.limits.header_timeout)  # type: ignore[misc]


class _Server(wsgi.Server):  # type: ignore[misc]
    ConnectionClass = _Connection

    def __init__(self, limits: _Limits, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limits = limits

    def prepare(self) -> None:
        super().prepare()
        stock: Any = self._connections  # replaced before anything is accepted
        stock.close()
        self._connections: Any = _Manager(self)

    def process_conn(self, conn: _Connection) -> None:
        """A connection with something to read: its handshake step, or a worker."""
        if isinstance(conn.socket, ssl.SSLSocket) and not conn.handshaken:
            step = conn.handshake_step()
            if step == HANDSHAKE_FAILED:
                self.limits.end(conn.socket)
                conn.close()
                return
            if step == HANDSHAKE_AGAIN or not conn.socket.pending():
                self._connections.put(conn)  # back to the selector until more arrives
                return
        super().process_conn(conn)

    def error_log(self, msg: str = "", level: int = 20, traceback: bool = False) -> None:
        log.log(max(level, logging.INFO), "web server: %s", msg, exc_info=traceback)


def redirect_app(https_port: int) -> Callable[..., Any]:
    """A WSGI app that sends every request to the same path on the HTTPS port."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        host = environ.get("HTTP_HOST", "")
        match = _HOST.match(host)
        name = match.group(1) if match else (socket.gethostname() or "localhost")
        port = "" if https_port == 443 else f":{https_port}"
        path = urllib.parse.quote(environ.get("PATH_INFO", "/").encode("latin-1"), safe="/-._~")
        query = environ.get("QUERY_STRING", "")
        location = f"https://{name}{port}{path}" + (
            f"?{urllib.parse.quote(query, safe='=&%+')}" if query else ""
        )
        safe = environ.get("REQUEST_METHOD") in ("GET", "HEAD")
        body = b"This box serves its web page over HTTPS only.\r\n"
        start_response(
            "301 Moved Permanently" if safe else "308 Permanent Redirect",
            [
                ("Location", location),
                ("Content-Type", "text/plain"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
                ("X-Content-Type-Options", "nosniff"),
            ],
        )
        return [body]

    return app


class WebServer:
    """The app (and with HTTPS the redirect) on their ports; ``start()`` returns bound."""

    def __init__(
        self,
        app: Callable[..., Any],
        cfg: Any,
        tls_context: ssl.SSLContext | None = None,
        cert: tuple[Path, Path] | None = None,
    ) -> None:
        self.cfg = cfg
        self.port = 0
        self.http_port: int | None = None
        self._limits = _Limits(cfg.max_connections, cfg.max_per_address, cfg.header_timeout)
        self._servers: list[tuple[_Server, threading.Thread]] = []
        self._app = app
        self._tls = tls_context
        self._cert = cert

    def _make(self, app: Callable[..., Any], port: int) -> _Server:
        srv = _Server(
            self._limits,
            bind_addr=(self.cfg.host, port),
            wsgi_app=app,
            numthreads=self.cfg.threads,
            max=self.cfg.threads,
            server_name="appliance",
            timeout=SEND_TIMEOUT,
            shutdown_timeout=2,
            request_queue_size=64,
            accepted_queue_timeout=1,
        )
        srv.max_request_header_size = MAX_HEADER_BYTES
        # How long the selector loop sleeps between checks for idle connections and for
        # a stop; cheroot's 0.5 s made every stop (and restart) wait half a second.
        srv.expiration_interval = 0.1
        srv.max_request_body_size = self.body_limit
        return srv

    body_limit = 8 * 1024 * 1024

    def start(self) -> WebServer:
        try:
            main = self._make(self._app, self.cfg.port)
            if self._tls is not None:
                assert self._cert is not None
                main.ssl_adapter = _LazyTLS(self._tls, *self._cert)
            self._run(main, "web")
            self.port = int(main.bind_addr[1])
            if self._tls is not None and self.cfg.http_redirect:
                plain = self._make(redirect_app(self.port), self.cfg.http_port)
                self._run(plain, "web-redirect")
                self.http_port = int(plain.bind_addr[1])
        except BaseException:
            self.stop()
            raise
        return self

    def _run(self, srv: _Server, name: str) -> None:
        srv.prepare()  # binds: a port in use raises OSError here
        thread = threading.Thread(target=srv.serve, name=name, daemon=True)
        thread.start()
        self._servers.append((srv, thread))

    def stop(self) -> None:
        """Close the listeners and every connection; safe to call twice."""
        servers, self._servers = self._servers, []
        stoppers = [threading.Thread(target=srv.stop, name="web-stop") for srv, _ in servers]
        for stopper in stoppers:  # each waits up to expiration_interval for its selector loop
            stopper.start()
        for stopper in stoppers:
            stopper.join(timeout=5)
        for _, thread in servers:
            thread.join(timeout=3)

    def health(self) -> dict[str, Any]:
        return {
            "state": "running" if self._servers else "stopped",
            "port": self.port,
            "https": self._tls is not None,
            **({"http_redirect_port": self.http_port} if self.http_port else {}),
            "connections": self._limits.open_count(),
        }
