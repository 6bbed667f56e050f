"""The forward service on the shared listener: Storage SCP, senders, health."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pydicom.pixels import get_decoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

from appliance import destinations, live
from appliance.config import DestinationSettings
from appliance.dicom import tls
from appliance.forward import commitment, intake, queue
from appliance.forward.committer import Committer, handle_n_action, handle_n_event_report
from appliance.forward.receiver import Receiver, handle_store
from appliance.forward.retention import Retention
from appliance.forward.sender import Sender
from appliance.forward.spool import Spool
from appliance.runtime import Runtime
from appliance.worker import Worker

log = logging.getLogger(__name__)

# When one presentation context proposes several syntaxes, the first of the acceptor's
# list that the requestor offers is accepted (pynetdicom picks in the acceptor's order).
# forward.prefer = "lossless": a lossless compressed syntax first (fewer bytes in the spool
# and on the link, the same pixels), then explicit VR little endian (the spooled file keeps
# its VRs), then the other uncompressed ones, lossy syntaxes last (taken only when nothing
# else is offered, so nothing is lost twice). "uncompressed": explicit VR first, then the
# rest in pynetdicom's order. Every file is kept byte for byte as received.
LOSSLESS = [
    JPEGLSLossless, JPEG2000Lossless, HTJ2KLossless, HTJ2KLosslessRPCL, JPEGLosslessSV1,
    JPEGLossless, RLELossless,
]  # fmt: skip
UNCOMPRESSED_FIRST = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
]


def _decodable(uid: UID) -> bool:
    """A pixel plugin is installed that decodes this syntax (the forwarder may need to)."""
    try:
        return bool(get_decoder(uid).is_available)
    except Exception:  # no decoder is registered for it
        return False


def accepted_syntaxes(prefer: str) -> list[UID]:
    """The storage contexts' transfer syntaxes, most preferred first (see above)."""
    first: list[UID] = [ExplicitVRLittleEndian]
    if prefer == "lossless":
        first = [*(ts for ts in LOSSLESS if _decodable(ts)), *UNCOMPRESSED_FIRST]
    rest = [UID(ts) for ts in ALL_TRANSFER_SYNTAXES if ts not in first]
    if prefer == "lossless":
        rest.sort(key=lambda ts: ts.is_compressed)  # big endian before lossy ones
    return [*first, *rest]


class ForwardService:
    """Storage SCP into a durable spool, and senders for every destination of the live
    list (``runtime.destinations``: the file's ``[[destinations]]`` and the web's)."""

    name = "forward"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        config = runtime.config
        self.config = config
        self.store = runtime.store
        self.live = runtime.destinations
        fwd = config.forward
        self.spool = Spool(
            config.data_dir / "spool", fwd.spool, fwd.journal_segment_mb * 1024 * 1024
        )
        self.committer = Committer(config, self.store, runtime.access, self.live.current)
        self.retention = Retention(self.store, self.spool, fwd.retention_hours, fwd.budget_mb)
        # Per destination, one worker per parallel association (forward.associations).
        # Replaced as a whole (never changed in place) when the destinations change.
        self.senders: dict[str, list[Sender]] = {
            d.name: self._lanes(d) for d in self.live.current()
        }
        self._reconcile_lock = threading.Lock()
        self.watcher = DestinationWatcher(self)
        self.receiver = Receiver(
            config, self.store, self.spool, on_queued=self._wake, destinations=self.live.current
        )
        self.state = "stopped"

    def _lanes(self, dest: DestinationSettings) -> list[Sender]:
        fwd = self.config.forward
        lanes = 1 if destinations.device_ae(dest.name) is not None else fwd.associations
        return [
            Sender(
                dest,
                self.config.dicom,
                self.store,
                self.spool,
                fwd,
                on_delivered=self._delivered,
                lane=lane,
                lanes=lanes,
                tls_args=tls.for_destination(self.config, dest),
            )
            for lane in range(lanes)
        ]

    def reconcile(self) -> None:
        """Make the senders match the live destination list: start workers of a new
        destination, stop and drop those of a removed one, restart those of a changed one.
        The queue rows of a removed destination stay; they wait until it is added again."""
        with self._reconcile_lock:
            wanted = {d.name: d for d in self.live.current()}
            wanted.update(self._device_targets())
            old = self.senders
            keep = {
                n: lanes for n, lanes in old.items() if n in wanted and lanes[0].dest == wanted[n]
            }
            gone = [lanes for n, lanes in old.items() if n not in keep]
            fresh = {n: self._lanes(d) for n, d in wanted.items() if n not in keep}
            if not gone and not fresh:
                return
            for lanes in gone:
                for sender in lanes:
                    sender.stop()
            self.senders = {n: keep.get(n) or fresh[n] for n in wanted}
            for lanes in fresh.values():
                for sender in lanes:
                    sender.start()
            log.info(
                "forward destinations now %s (started %s, stopped %s)",
                ", ".join(wanted) or "none",
                ", ".join(fresh) or "none",
                ", ".join(lanes[0].dest.name for lanes in gone) or "none",
            )
        self.committer.wake()

    def _device_targets(self) -> dict[str, DestinationSettings]:
        """The devices that rows of the queue wait for (a person's "Send to"), as ad-hoc
        destinations with one association each; a device without host and port (or no
        longer known) gets no sender: its rows wait, as those of a removed destination."""
        rows = self.store.query(
            "SELECT DISTINCT destination FROM forward_queue WHERE state = 'waiting' "
            "AND destination >= ? AND destination < ?",
            (destinations.DEVICE_PREFIX, destinations.DEVICE_PREFIX[:-1] + ";"),
        )
        out: dict[str, DestinationSettings] = {}
        for r in rows:
            ae = destinations.device_ae(r["destination"]) or ""
            device = self.runtime.access.device(ae)
            if device is not None and device.host and device.port:
                dest = destinations.for_device(ae, device.host, device.port)
                out[dest.name] = dest
        return out

    def contexts(self) -> list[tuple[Any, ...]]:
        """Every storage SOP class with every transfer syntax (in forward.prefer's order) and
        role selection accepted, and
        Storage Commitment, whose reports a PACS sends as association requestor in the
        SCP role (role selection accepted)."""
        syntaxes = accepted_syntaxes(self.config.forward.prefer)
        # Either role is accepted when proposed (PS3.7 D.3.3.4): a C-GET SCU takes the
        # Query/Retrieve service's C-STORE sub-operations as SCP on these contexts.
        roles = {"scu_role": True, "scp_role": True}
        out: list[tuple[Any, ...]] = [
            (str(cx.abstract_syntax), syntaxes, roles) for cx in AllStoragePresentationContexts
        ]
        out.append((commitment.SOP_CLASS, None, {"scu_role": True, "scp_role": True}))
        return out

    def handlers(self) -> list[tuple[Any, ...]]:
        access = self.runtime.access
        storage = frozenset(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts)
        return [
            # C-STORE data sets go from the socket to the spool (appliance/forward/intake.py);
            # pynetdicom's own C-STORE path only where the intake could not be installed.
            (evt.EVT_CONN_OPEN, intake.install, [self.receiver, access, storage]),
            (evt.EVT_C_STORE, handle_store, [self.receiver, access]),
            (evt.EVT_N_ACTION, handle_n_action, [self.committer, access]),
            (evt.EVT_N_EVENT_REPORT, handle_n_event_report, [self.committer]),
        ]

    def start(self) -> None:
        self.spool.prepare()
        self.receiver.recover()
        if self.spool.journaled:
            self.spool.journal.start()  # spare segments made ahead of the C-STOREs
        for lanes in self.senders.values():
            for sender in lanes:
                sender.start()
        self.committer.start()
        self.retention.start()
        self.live.subscribe(self.watcher.wake)
        self.watcher.start()
        self.state = "running"

    def stop(self) -> None:
        self.live.unsubscribe(self.watcher.wake)
        self.watcher.stop()
        self.retention.stop()
        self.committer.stop()
        for lanes in self.senders.values():
            for sender in lanes:
                sender.stop()
        self.spool.journal.close()
        self.state = "stopped"

    def _delivered(self, items: list[Any]) -> None:
        self.committer.wake()
        self.retention.wake()

    def _wake(self, names: list[str]) -> None:
        for name in names:
            for sender in self.senders.get(name, ()):
                sender.wake()

    def health(self) -> dict[str, Any]:
        """State, free spool space and, per destination, what waits and why."""
        now = time.time()
        dests = {}
        stall_after = self.config.forward.stall_minutes * 60
        stalled = []
        for row in queue.summary(self.store, self.senders, now, stall_after):
            name = row["destination"]
            lanes = self.senders.get(name, [])
            oldest = row["oldest_waiting_at"]
            dests[name] = {
                "waiting": row["waiting"],
                "held": row["held"],
                "stalled_s": row["stalled_s"],
                "dead": row["dead"],
                "delivered": row["delivered"],
                "delivered_last_minute": row["delivered_last_minute"],
                "oldest_waiting_s": round(now - oldest, 1) if oldest else None,
                # Why items wait now (from the queue rows); each worker's own last error,
                # stale once it recovered, is under "associations".
                "last_error": row["last_error"],
                "associations": [s.health() for s in lanes] or [{"state": _idle(name)}],
            }
            if row["stalled_s"] is not None:
                stalled.append(name)
        free = self.spool.free_bytes() if self.spool.root.exists() else None
        state = self.state
        if state == "running" and stalled:
            # Images wait and none arrives: someone must look (forward.stall_minutes).
            state = f"stalled: no progress to {', '.join(stalled)} while images wait"
        if state == "running" and free is not None and free < self.receiver.reserve_bytes:
            # C-STORE answers A700 until space is freed: the box is not healthy.
            state = "refusing images: spool free space below forward.reserve_mb"
        return {
            "state": state,
            "spool_free_mb": None if free is None else free // (1024 * 1024),
            "received_since_start": self.receiver.streamed,
            "destinations": dests,
            "unrouted": queue.unrouted_count(self.store),
            "commitment": self.committer.health(),
            "retention": self.retention.health(),
        }


def _idle(name: str) -> str:
    """Why a destination with queue rows has no sender: removed, or a device whose sender
    runs only while rows wait for it (and it has host and port)."""
    if destinations.device_ae(name) is not None:
        return "device: a sender runs while images wait for it (with host and port)"
    return "destination removed"


class DestinationWatcher(Worker):
    """Applies destination changes to the forwarder's senders, off the web's and the
    listener's threads: woken by the live list when it changes in this process, and
    looking every ``REFRESH_S`` seconds for a change made by another process."""

    def __init__(self, service: ForwardService) -> None:
        super().__init__()
        self.service = service

    def thread_name(self) -> str:
        return "forward-destinations"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.service.reconcile()
            except Exception:  # a bug must not kill the watcher; logged, tried again
                log.exception("forward: applying destination changes failed")
            if self._wake.wait(live.REFRESH_S):
                self._wake.clear()
