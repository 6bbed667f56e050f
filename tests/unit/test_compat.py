"""Contract tests for appliance/dicom/compat.py: what it relies on in pynetdicom (and in
socketserver and cheroot) is still there and still means the same.

A failure here after an upgrade means: read the changed code in the new version, adapt
the one function in compat.py that uses it, then update the recorded source digest.
"""

from __future__ import annotations

import hashlib
import inspect
import socketserver
import threading

import pydicom
import pynetdicom
import pytest
from pynetdicom import AE, DEFAULT_TRANSFER_SYNTAXES, evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import StateMachine
from pynetdicom.presentation import PresentationContext
from pynetdicom.service_class import QueryRetrieveServiceClass, ServiceClass
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StorageCommitmentPushModel,
    Verification,
)
from pynetdicom.transport import AssociationSocket, RequestHandler

from appliance.dicom import compat

# The source of the private functions whose behaviour compat.py copies or replaces, as
# read for compat.READ_FROM. A new digest means their code changed: read it again.
SOURCES = {
    RequestHandler._create_association: "05c8d12b79863cdb",  # copied by new_acceptor
    DULServiceProvider._read_pdu_data: "19f2d4e38c13c835",  # replaced by the intake
    DULServiceProvider._is_transport_event: "8725ed03bb8fbdef",  # wrapped by the guard
    DULServiceProvider._decode_pdu: "fc71dd1bf853e1ce",  # used by hand_pdu_to_dul
    Association._get_valid_context: "117a52c2ae6720e0",  # used by context_for
    # Calls _move_scp / _get_scp, which serve_retrieves_whole replaces for its classes.
    QueryRetrieveServiceClass.SCP: "e59ba54b9071ffc3",
    ServiceClass.is_cancelled: "fb9acf44b9bd05fe",  # passed to the handler's Event
}


def test_the_versions_compat_was_read_from() -> None:
    assert pynetdicom.__version__ == compat.READ_FROM
    assert pydicom.__version__.startswith("3.0.")


@pytest.mark.parametrize("func", list(SOURCES), ids=lambda f: f.__qualname__)
def test_private_code_is_as_read(func) -> None:
    digest = hashlib.sha256(inspect.getsource(func).encode()).hexdigest()[:16]
    assert digest == SOURCES[func], f"{func.__qualname__} changed: re-read it for compat.py"


def test_signatures() -> None:
    assert list(inspect.signature(DULServiceProvider._decode_pdu).parameters) == [
        "self",
        "bytestream",
    ]
    assert list(inspect.signature(StateMachine.do_action).parameters) == ["self", "event"]
    assert list(inspect.signature(DIMSEServiceProvider.get_msg).parameters)[:2] == [
        "self",
        "block",
    ]
    assert "_transfer_syntax" in PresentationContext().__dict__
    assert isinstance(inspect.getattr_static(AssociationSocket, "ready"), property)
    assert list(inspect.signature(AssociationSocket.recv).parameters) == ["self", "nr_bytes"]
    for name in ("_move_scp", "_get_scp"):
        original = compat._REPLACED_RETRIEVES.get(name, getattr(QueryRetrieveServiceClass, name))
        assert list(inspect.signature(original).parameters) == ["self", "req", "context"]
    assert list(inspect.signature(evt.Event).parameters) == ["assoc", "event", "attrs"]


def test_socketserver_names() -> None:
    server = socketserver.TCPServer(("127.0.0.1", 0), socketserver.BaseRequestHandler)
    try:
        assert compat.shutdown_requested(server) is False  # the flag exists and is clear
    finally:
        server.server_close()


def test_cheroot_internals_the_web_server_relies_on() -> None:
    """appliance/webserver.py overrides these cheroot 11.1 methods and swaps the
    connection manager after ``prepare()``; the hostile HTTPS suite checks the effect."""
    from cheroot import connections, server, wsgi

    manager = connections.ConnectionManager
    assert list(inspect.signature(manager._from_server_socket).parameters) == [
        "self", "server_socket",
    ]  # fmt: skip
    assert list(inspect.signature(manager._expire).parameters) == ["self", "threshold"]
    assert "self._connections = connections.ConnectionManager(self)" in inspect.getsource(
        server.HTTPServer.prepare
    )
    assert "self.server.process_conn(new_conn)" in inspect.getsource(manager._run)
    assert "self._expire(threshold=" in inspect.getsource(manager._run)
    assert server.HTTPConnection.RequestHandlerClass is server.HTTPRequest
    assert issubclass(wsgi.Server, server.HTTPServer)


def test_on_a_live_association() -> None:
    """The functions work on a real pynetdicom association over loopback."""
    scp = AE(ae_title="SCP")
    scp.add_supported_context(Verification)
    server = scp.start_server(("127.0.0.1", 0), block=False)
    try:
        scu = AE(ae_title="SCU")
        scu.add_requested_context(Verification)
        polled = threading.Event()

        def poll(original):
            polled.set()
            return original()

        assoc = scu.associate(
            "127.0.0.1",
            server.server_address[1],
            ae_title="SCP",
            evt_handlers=[
                (evt.EVT_CONN_OPEN, lambda e: compat.wrap_reactor(e.assoc.dul, poll, lambda a, ev: a(ev)))
            ],
        )  # fmt: skip
        assert assoc.is_established
        dul = assoc.dul
        assert compat.missing_internals(dul) == []
        assert compat.dul_state(dul) == "Sta6"
        assert compat.raw_socket(dul) is not None
        assert compat.reactor_wrapper(dul) is poll
        assert polled.wait(2)
        assert compat.context_for(assoc, Verification).context_id == 1
        assert compat.peer_pdu_waiting(assoc) is False
        assert compat.peek_dimse(assoc) is None
        assert compat.pause_reactor(assoc, deadline=1e12)
        compat.resume_reactor(assoc)
        assert assoc.send_c_echo().Status == 0x0000  # the wrapped reactor still works
        compat.restart_idle_timer(dul)
        assoc.release()
        assert isinstance(assoc, Association)
    finally:
        server.shutdown()


def test_supported_contexts_built_once_equal_pynetdicom_s_own() -> None:
    """compat.add_supported_context copies contexts built once per process into
    ``AE._supported_contexts``; the AE ends as add_supported_context leaves it, and no
    AE shares a transfer syntax list with another (or with the cache)."""
    specs = [
        (Verification, DEFAULT_TRANSFER_SYNTAXES, None, None),
        (CTImageStorage, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"], None, None),
        (StorageCommitmentPushModel, DEFAULT_TRANSFER_SYNTAXES, True, True),
        (CTImageStorage, ["1.2.840.10008.1.2.4.50"], None, None),  # merged into the first
    ]
    theirs, ours, again = AE(), AE(), AE()
    for uid, syntaxes, scu, scp in specs:
        theirs.add_supported_context(uid, syntaxes, scu_role=scu, scp_role=scp)
        compat.add_supported_context(ours, uid, syntaxes, scu_role=scu, scp_role=scp)
        compat.add_supported_context(again, uid, syntaxes, scu_role=scu, scp_role=scp)

    def shape(ae: AE) -> list[tuple]:
        return [
            (cx.abstract_syntax, cx.transfer_syntax, cx.scu_role, cx.scp_role)
            for cx in ae.supported_contexts
        ]

    assert shape(ours) == shape(theirs) == shape(again)
    ct = ours._supported_contexts[CTImageStorage].transfer_syntax
    assert ct == ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.50"]
    assert "1.2.840.10008.1.2.4.50" not in ours._supported_contexts[Verification].transfer_syntax
    mine = ours._supported_contexts[CTImageStorage]._transfer_syntax
    assert mine is not again._supported_contexts[CTImageStorage]._transfer_syntax
    assert all(mine is not cx._transfer_syntax for cx in compat._SUPPORTED.values())
