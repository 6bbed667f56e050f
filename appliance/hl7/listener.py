"""The MLLP listener: python-hl7's asyncio server in its own thread, bounded per connection.

MLLP framing (``<VT> message <FS><CR>``, HL7 v2.5.1 Appendix C) is python-hl7's
``hl7.mllp``; this module adds the bounds a listener on a hospital network needs: a
largest message (its stream limit; larger gets AR and the connection closes), a time a
connection may wait for its next whole message (a silent or trickling peer is closed),
and a number of connections at once (one more closes the one waiting longest, one that
never delivered a message first, else is itself closed). Messages are handled one at a
time on one worker thread, in the order they arrive.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from hl7.mllp import InvalidBlockError, start_hl7_server

from appliance.config import Hl7Settings
from appliance.hl7 import ack

log = logging.getLogger(__name__)

Handler = Callable[[bytes, str], bytes]
COUNTS = (
    "connections_refused",
    "connections_evicted",
    "idle_closed",
    "oversized",
    "framing_errors",
)
# A connection waiting this long for its next message may be closed to make room.
EVICT_AFTER = 0.5


@dataclass
class Connection:
    """One peer's state: since when it waits for a message, and how many it delivered."""

    writer: Any
    since: float
    messages: int = 0
    busy: bool = False


class Hl7Listener:
    """``start()`` returns once bound (``port`` read back); ``stop()`` closes every connection."""

    def __init__(self, settings: Hl7Settings, handle: Handler) -> None:
        self.settings = settings
        self.handle = handle
        self.port: int | None = None
        # Every key present from the start: health() reads it from another thread.
        self.counts: Counter[str] = Counter(dict.fromkeys(COUNTS, 0))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._conns: dict[asyncio.Task[Any], Connection] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hl7-apply")

    @property
    def max_bytes(self) -> int:
        return self.settings.max_message_kb * 1024

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> Hl7Listener:
        self._thread = threading.Thread(target=self._run, name="hl7", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the HL7 listener did not start within 10 s")
        if self._error is not None:
            self._thread.join(timeout=2)
            raise self._error
        log.info("HL7 listener on port %s", self.port)
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(
                start_hl7_server(
                    self._serve, self.settings.host, self.settings.port, limit=self.max_bytes
                )
            )
        except OSError as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def stop(self) -> None:
        """Close the listening socket and every connection; safe to call twice."""
        loop, self._loop = self._loop, None
        if loop is not None:
            future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            try:
                future.result(timeout=5)
            except (TimeoutError, asyncio.CancelledError):
                log.warning("HL7 connections did not close within 5 s")
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = list(self._conns)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def health(self) -> dict[str, Any]:
        return {
            "state": "running" if self._loop is not None else "stopped",
            "port": self.port,
            "connections": len(self._conns),
            **self.counts,
        }

    # -- one connection ------------------------------------------------------------

    async def _serve(self, reader: Any, writer: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._conns) >= self.settings.max_connections and not self._make_room():
            self.counts["connections_refused"] += 1
            writer.transport.abort()
            return
        conn = Connection(writer, time.monotonic())
        self._conns[task] = conn
        peer = str((writer.get_extra_info("peername") or ("",))[0])
        try:
            await self._messages(reader, writer, peer, conn)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._conns.pop(task, None)
            writer.transport.abort()

    def _make_room(self) -> bool:
        """Close the connection that has waited longest (over EVICT_AFTER s) for a message,
        preferring one that never delivered any: a RIS that sent orders keeps its link while
        port scans and silent peers come and go."""
        now = time.monotonic()
        idle = [
            (c.messages > 0, c.since, task)
            for task, c in self._conns.items()
            if not c.busy and now - c.since > EVICT_AFTER
        ]
        if not idle:
            return False
        _, _, task = min(idle)
        self._conns.pop(task).writer.transport.abort()
        self.counts["connections_evicted"] += 1
        return True

    async def _messages(self, reader: Any, writer: Any, peer: str, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        timeout = self.settings.idle_timeout
        while True:
            try:
                block = await asyncio.wait_for(reader.readblock(), timeout)
            except TimeoutError:
                self.counts["idle_closed"] += 1
                return
            except asyncio.IncompleteReadError:
                return  # the peer closed (an unfinished message is dropped)
            except InvalidBlockError:
                self.counts["framing_errors"] += 1
                log.warning("HL7 connection from %s closed: data outside an MLLP block", peer)
                return
            except ValueError:
                self.counts["oversized"] += 1
                reason = f"message larger than {self.settings.max_message_kb} KiB"
                writer.writeblock(ack.bare_reject(reason).encode("ascii"))
                await asyncio.wait_for(writer.drain(), timeout)
                return
            conn.busy = True
            try:
                answer = await loop.run_in_executor(self._executor, self.handle, block, peer)
            except Exception:  # the handler answers everything; this is a bug, not a peer
                log.exception("HL7 message from %s not handled", peer)
                answer = ack.bare_reject("internal error").encode("ascii")
            writer.writeblock(answer)
            await asyncio.wait_for(writer.drain(), timeout)
            conn.busy, conn.since, conn.messages = False, time.monotonic(), conn.messages + 1
