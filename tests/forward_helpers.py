"""Helpers of the forward tests: a pynetdicom modality and appliance settings."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE

from appliance import status

MODALITY = "MODALITY"


def send_files(
    port: int,
    paths: Iterable[Path],
    calling: str = MODALITY,
    called: str = "APPLIANCE",
) -> list[int | None]:
    """C-STORE every file over one association; each response status (None: no answer)."""
    datasets = [dcmread(p) for p in paths]
    ae = AE(ae_title=calling)
    for pair in {(d.SOPClassUID, d.file_meta.TransferSyntaxUID) for d in datasets}:
        ae.add_requested_context(pair[0], [pair[1]])
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established, "the appliance refused the association"
    out: list[int | None] = []
    try:
        for ds in datasets:
            rsp = assoc.send_c_store(ds)
            out.append(int(rsp.Status) if rsp and "Status" in rsp else None)
    finally:
        assoc.release()
    return out


def store_dataset(port: int, ds: Any, calling: str = MODALITY) -> Any:
    """C-STORE one data set over its own association; the response (its Status and
    ErrorComment)."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(ds.SOPClassUID, [ds.file_meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", port, ae_title="APPLIANCE")
    assert assoc.is_established, "the appliance refused the association"
    try:
        return assoc.send_c_store(ds)
    finally:
        assoc.release()


def forward_config(
    destinations: list[dict[str, Any]], devices: Iterable[str] = (MODALITY,), **forward: Any
) -> dict[str, Any]:
    """TOML-shaped settings: the devices allowed to store, fast retries, no disk reserve."""
    return {
        "devices": [{"ae_title": d} for d in devices],
        "destinations": destinations,
        "forward": {"reserve_mb": 0, "retry_initial": 0.05, "retry_max": 0.5, **forward},
    }


def pacs_destination(name: str, ae_title: str, port: int, **rules: Any) -> dict[str, Any]:
    return {"name": name, "ae_title": ae_title, "host": "127.0.0.1", "port": port, **rules}


class FakePacs:
    """A pynetdicom Storage SCP on 127.0.0.1 port 0 whose answers a test scripts.

    ``statuses`` is consumed one per C-STORE (then Success), each a status or a
    (status, Error Comment) pair; ``by_uid`` the same for each SOP Instance UID, first;
    ``port`` may be a free port chosen earlier (0: any); ``syntaxes`` limits the transfer syntaxes it accepts;
    ``sop_classes`` limits the SOP classes; ``max_pdu`` is its maximum PDU length (0 =
    unlimited). Misbehaviour by C-STORE number (0-based): ``abort_at`` answers with an
    A-ABORT, ``hang_at`` never answers (until ``close``), ``before_answer`` runs a
    function of the event first (e.g. writing raw bytes on the socket). The first
    ``abort_mid_dataset`` associations are aborted after a data set's third P-DATA-TF
    (with ``reset``: the connection is reset instead, unread data and all).
    """

    def __init__(
        self,
        ae_title: str = "FAKEPACS",
        statuses: Iterable[int | tuple[int, str]] = (),
        syntaxes: Iterable[str] | None = None,
        sop_classes: Iterable[str] | None = None,
        abort_at: Iterable[int] = (),
        hang_at: Iterable[int] = (),
        before_answer: dict[int, Callable[[Any], None]] | None = None,
        abort_mid_dataset: int = 0,
        reset: bool = False,
        max_pdu: int = 0,
        by_uid: dict[str, list[int | tuple[int, str]]] | None = None,
        port: int = 0,
    ) -> None:
        from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

        self.ae_title = ae_title
        self.statuses = list(statuses)
        self.by_uid = {uid: list(answers) for uid, answers in (by_uid or {}).items()}
        self.abort_at = set(abort_at)  # C-STORE numbers (0-based) answered with an A-ABORT
        self.hang_at = set(hang_at)
        self.before_answer = dict(before_answer or {})
        self.abort_mid_dataset = abort_mid_dataset
        self.reset = reset
        self.aborted_mid_dataset = 0
        self._pdata: dict[int, int] = {}  # P-DATA-TF PDUs received, by association
        self._closing = threading.Event()
        self.requests = 0
        self.received: list[Any] = []  # (status answered, dataset, transfer syntax)
        self.message_ids: list[int] = []  # of every C-STORE request, in order
        self.associations = 0
        self.released = 0
        self.aborted = 0
        self.ae = AE(ae_title=ae_title)
        self.ae.maximum_pdu_size = max_pdu
        ts = list(syntaxes) if syntaxes is not None else list(ALL_TRANSFER_SYNTAXES)
        classes = (
            list(sop_classes)
            if sop_classes is not None
            else [cx.abstract_syntax for cx in AllStoragePresentationContexts]
        )
        for uid in classes:
            self.ae.add_supported_context(uid, ts)
        self.ae.add_supported_context("1.2.840.10008.1.1")  # Verification
        handlers = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_PDU_RECV, self._on_pdu),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
        ]
        self.server = self.ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
        self.port = int(self.server.server_address[1])

    def _on_established(self, event: Any) -> None:
        self.associations += 1

    def _on_released(self, event: Any) -> None:
        self.released += 1

    def _on_aborted(self, event: Any) -> None:
        self.aborted += 1

    def _on_pdu(self, event: Any) -> None:
        """In the DUL thread: A-ABORT in the middle of a data set, for the first associations."""
        from pynetdicom.pdu import P_DATA_TF

        if (
            not isinstance(event.pdu, P_DATA_TF)
            or self.aborted_mid_dataset >= self.abort_mid_dataset
        ):
            return
        key = id(event.assoc)
        self._pdata[key] = self._pdata.get(key, 0) + 1
        if self._pdata[key] == 4:  # the command, then three data fragments
            self.aborted_mid_dataset += 1
            if not self.reset:
                event.assoc.abort(block=False)
                return
            sock = event.assoc.dul.socket.socket
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # an RST: the requestor's writes fail

    def _on_store(self, event: Any) -> Any:
        self.requests += 1
        self.message_ids.append(int(event.request.MessageID))
        number = self.requests - 1
        if number in self.abort_at:
            event.assoc.abort()
            return status.PROCESSING_FAILURE  # never sent: the association is gone
        if number in self.hang_at:
            self._closing.wait(60)
            return status.PROCESSING_FAILURE  # too late: the requestor gave up
        if number in self.before_answer:
            self.before_answer[number](event)
        ds = event.dataset
        mine = self.by_uid.get(str(ds.SOPInstanceUID))
        if mine:
            answer = mine.pop(0)
        else:
            answer = self.statuses.pop(0) if self.statuses else status.SUCCESS
        code, comment = answer if isinstance(answer, tuple) else (answer, "")
        ds.file_meta = event.file_meta
        self.received.append((code, ds, event.context.transfer_syntax))
        if not comment:
            return code
        rsp = Dataset()
        rsp.Status = code
        rsp.ErrorComment = comment
        return rsp

    def stored_uids(self) -> list[str]:
        """SOP Instance UIDs answered with Success or a warning, in order."""
        return [
            str(ds.SOPInstanceUID)
            for code, ds, _ in self.received
            if code == status.SUCCESS or code in status.WARNING_RANGE
        ]

    def close(self) -> None:
        self._closing.set()
        self.server.shutdown()


class CommitmentModality:
    """A modality asking for Storage Commitment: N-ACTION out, N-EVENT-REPORT back in.

    Its own listener (127.0.0.1 port 0) takes the report on a new association where the
    appliance, as requestor, acts as SCP of the class (role selection).
    """

    SOP_CLASS = "1.2.840.10008.1.20.1"
    SOP_INSTANCE = "1.2.840.10008.1.20.1.1"

    def __init__(
        self, ae_title: str = MODALITY, tls_server: Any = None, tls_args: Any = None
    ) -> None:
        """``tls_server``: an ssl.SSLContext for its listener; ``tls_args``: pynetdicom's
        (context, host name) toward the appliance's TLS port for its N-ACTION."""
        from pynetdicom import evt

        self.ae_title = ae_title
        self.tls_args = tls_args
        self.reports: list[tuple[int, Any]] = []  # (event type, event information)
        self.ae = AE(ae_title=ae_title)
        self.ae.add_supported_context(self.SOP_CLASS, scu_role=True, scp_role=True)
        handlers = [(evt.EVT_N_EVENT_REPORT, self._on_report)]
        self.server = self.ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=handlers, ssl_context=tls_server
        )
        self.port = int(self.server.server_address[1])

    def _on_report(self, event: Any) -> tuple[int, None]:
        self.reports.append((event.event_type, event.event_information))
        return status.SUCCESS, None

    def request(self, appliance_port: int, txn: str, refs: list[tuple[str, str]]) -> int:
        """Send the N-ACTION; returns its response status."""
        from pydicom.dataset import Dataset

        ds = Dataset()
        ds.TransactionUID = txn
        items = []
        for sop_class, sop_instance in refs:
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class
            item.ReferencedSOPInstanceUID = sop_instance
            items.append(item)
        ds.ReferencedSOPSequence = items
        ae = AE(ae_title=self.ae_title)
        ae.add_requested_context(self.SOP_CLASS)
        assoc = ae.associate(
            "127.0.0.1", appliance_port, ae_title="APPLIANCE", tls_args=self.tls_args
        )
        assert assoc.is_established
        try:
            rsp, _ = assoc.send_n_action(ds, 1, self.SOP_CLASS, self.SOP_INSTANCE)
        finally:
            assoc.release()
        return int(rsp.Status)

    def close(self) -> None:
        self.server.shutdown()


def senders(app: Any, destination: str) -> list[Any]:
    """The forward workers (one a parallel association) of a destination."""
    forward = next(s for s in app.services if s.name == "forward")
    return list(forward.senders[destination])


def refs_of(paths: Iterable[Path]) -> list[tuple[str, str]]:
    """(SOP Class UID, SOP Instance UID) of files, as a commitment request lists them."""
    out = []
    for p in paths:
        ds = dcmread(p, stop_before_pixels=True)
        out.append((str(ds.SOPClassUID), str(ds.SOPInstanceUID)))
    return out
