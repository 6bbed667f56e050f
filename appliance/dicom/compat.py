"""Every use of pynetdicom's (and two other libraries') private internals, in one place.

The appliance goes below pynetdicom's public API where pynetdicom is slow or at fault:
the intake reads C-STORE P-DATA straight from the socket, the sender writes data sets
on it, print reports are sent with the reactor paused, the listener's edge builds its
own acceptor. Each such use is one small function here, read from pynetdicom 3.0.4
(``READ_FROM``); ``tests/unit/test_compat.py`` checks every name and signature they
rely on, so an upgrade that changes one fails loudly there instead of deep in a
reactor thread. pyproject pins ``pynetdicom~=3.0.4`` until those tests pass on a newer one.
"""

from __future__ import annotations

import copy
import socket
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from pynetdicom import AE, evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.service_class import QueryRetrieveServiceClass

READ_FROM = "3.0.4"

# The DUL attributes the intake and the socket guard use (pynetdicom 3.0.4).
DUL_INTERNALS = (
    "_read_pdu_data", "_decode_pdu", "_recv_pdu", "event_queue", "to_provider_queue",
    "state_machine", "_kill_thread", "network_timeout", "socket", "_is_transport_event",
    "_idle_timer",
)  # fmt: skip


def missing_internals(dul: Any) -> list[str]:
    """The DUL attributes of ``DUL_INTERNALS`` this pynetdicom lacks (none on 3.0.4)."""
    return [name for name in DUL_INTERNALS if not hasattr(dul, name)]


# -- the DUL reactor's reading side (pynetdicom 3.0.4 dul.DULServiceProvider) ---------


def replace_pdu_reader(dul: Any, reader: Callable[[], None]) -> Callable[[], None]:
    """Put ``reader`` in place of ``DULServiceProvider._read_pdu_data`` (called by the
    reactor when the socket is readable: it must read one or more whole PDUs and queue
    their events); returns pynetdicom's own reader."""
    original: Callable[[], None] = dul._read_pdu_data
    dul._read_pdu_data = reader
    return original


def hand_pdu_to_dul(dul: Any, raw: bytes) -> bool:
    """Give one whole PDU (header included) to pynetdicom as its reader would have:
    decoded, its event (PS3.8 Evt3..Evt19) queued. False when it does not decode (Evt19
    queued instead, as pynetdicom's reader does)."""
    try:
        pdu, event = dul._decode_pdu(bytearray(raw))
    except Exception:
        dul.event_queue.put("Evt19")
        return False
    dul.event_queue.put(event)
    dul._recv_pdu.put(pdu)
    return True


def transport_closed(dul: Any) -> None:
    """Tell the state machine the connection closed (PS3.8 Evt17)."""
    dul.event_queue.put("Evt17")


def dul_state(dul: Any) -> str:
    """The PS3.8 state of the DUL state machine ("Sta6": association established)."""
    return str(dul.state_machine.current_state)


def dul_has_work(dul: Any) -> bool:
    """The reactor has something to do besides reading: stop, a primitive to send, an
    event to act on."""
    return bool(dul._kill_thread or dul.to_provider_queue.qsize() or dul.event_queue.qsize())


def events_pending(dul: Any) -> bool:
    """An event waits for the state machine (a release or abort may be due)."""
    return not dul.event_queue.empty()


def raw_socket(dul: Any) -> socket.socket | None:
    """The connection's socket under pynetdicom's AssociationSocket, or None once closed."""
    return getattr(dul.socket, "socket", None)


def restart_idle_timer(dul: Any) -> None:
    """The association is not idle: dicom.network_timeout starts again."""
    dul._idle_timer.restart()


def wrap_reactor(
    dul: Any,
    poll: Callable[[Callable[[], bool]], bool],
    act: Callable[[Callable[[str], None], str], None],
) -> None:
    """Put ``poll(original)`` around the reactor's socket check
    (``DULServiceProvider._is_transport_event``, the only place it reads the socket) and
    ``act(original, event)`` around the state machine's ``do_action`` (the only place it
    writes it)."""
    transport_event = dul._is_transport_event
    do_action = dul.state_machine.do_action
    dul._is_transport_event = lambda: poll(transport_event)
    dul._is_transport_event.wrapped_by = poll
    dul.state_machine.do_action = lambda event: act(do_action, event)


def reactor_wrapper(dul: Any) -> Any:
    """The ``poll`` callable ``wrap_reactor`` installed, or None."""
    return getattr(getattr(dul, "_is_transport_event", None), "wrapped_by", None)


# -- the association's reactor and DIMSE queue (pynetdicom 3.0.4 association.py) ------


def pause_reactor(assoc: Any, deadline: float, poll: float = 0.0002) -> bool:
    """Stop the association's reactor between two messages; False if the association
    ended or ``deadline`` (monotonic) passed first."""
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        if not assoc.is_established or time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def resume_reactor(assoc: Any) -> None:
    assoc._reactor_checkpoint.set()


def context_for(assoc: Any, abstract_syntax: str) -> Any:
    """The accepted presentation context pynetdicom would use to send a message of this
    SOP class (``Association._get_valid_context``); raises ValueError if there is none."""
    return assoc._get_valid_context(abstract_syntax, "", None)


def peer_pdu_waiting(assoc: Any) -> bool:
    """An A-RELEASE or A-ABORT from the peer waits for the ACSE layer."""
    return assoc.dul.peek_next_pdu() is not None


def peek_dimse(assoc: Any) -> Any:
    """The next DIMSE message received and not yet taken, or None."""
    return assoc.dimse.peek_msg()[1]


def take_dimse(assoc: Any) -> None:
    """Take the next DIMSE message off the queue."""
    assoc.dimse.get_msg(block=False)


# -- the acceptor (pynetdicom 3.0.4 transport.RequestHandler._create_association) -----


def new_acceptor(
    server: Any, ae: Any, local: Any, remote: Any, make_socket: Callable[[Any], Any]
) -> Association:
    """An acceptor Association as ``RequestHandler._create_association`` makes it, with
    the socket ``make_socket(assoc)`` (an AssociationSocket subclass) and the server's
    bound handlers; not started."""
    assoc = Association(ae, MODE_ACCEPTOR)
    assoc._server = server
    assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
    assoc.set_socket(make_socket(assoc))
    assoc.acceptor.maximum_length = ae.maximum_pdu_size
    assoc.acceptor.ae_title = server.ae_title
    assoc.acceptor.address_info = local
    assoc.acceptor.implementation_class_uid = ae.implementation_class_uid
    assoc.acceptor.implementation_version_name = ae.implementation_version_name
    assoc.acceptor.supported_contexts = copy.deepcopy(server.contexts)
    assoc.requestor.address_info = remote
    for event, bound in server._handlers.items():
        if event.is_intervention and bound:
            assoc.bind(event, *bound)
        elif isinstance(event, evt.NotificationEvent):
            for handler in bound:
                assoc.bind(event, handler[0], handler[1])
    return assoc


# Supported presentation contexts built once per process, by (abstract syntax, transfer
# syntaxes, roles): pynetdicom validates each transfer syntax UID twice per context, 0.2 s
# for the appliance's 186 contexts on every start (and in every test that starts one).
_SUPPORTED: dict[tuple[Any, ...], Any] = {}


def add_supported_context(
    ae: Any, abstract_syntax: str, syntaxes: Sequence[str],
    scu_role: bool | None = None, scp_role: bool | None = None,
) -> None:  # fmt: skip
    """``ae.add_supported_context`` (same result), from a context built once per process;
    a second call for an abstract syntax the AE already supports merges as pynetdicom does."""
    if abstract_syntax in ae._supported_contexts:
        ae.add_supported_context(abstract_syntax, syntaxes, scu_role=scu_role, scp_role=scp_role)
        return
    key = (str(abstract_syntax), tuple(str(s) for s in syntaxes), scu_role, scp_role)
    made = _SUPPORTED.get(key)
    if made is None:
        scratch = AE()
        scratch.add_supported_context(
            abstract_syntax, syntaxes, scu_role=scu_role, scp_role=scp_role
        )
        made = _SUPPORTED.setdefault(key, scratch.supported_contexts[0])
    ae._supported_contexts[made.abstract_syntax] = copy_context(made)


def copy_context(cx: Any) -> Any:
    """A presentation context copied with its own transfer syntax list (the only mutable
    part: ``PresentationContext._transfer_syntax``), for 150 contexts a copy in well
    under a millisecond where ``deepcopy`` takes 40-60 ms."""
    clone = copy.copy(cx)
    clone._transfer_syntax = list(cx._transfer_syntax)
    return clone


# -- the standard library ---------------------------------------------------------------


def shutdown_requested(server: Any) -> bool:
    """``socketserver.BaseServer.shutdown`` has set its flag (CPython 3.11 name-mangled
    ``__shutdown_request``); True when the attribute is not there (the wait then ends)."""
    return bool(getattr(server, "_BaseServer__shutdown_request", True))


# -- Query/Retrieve C-MOVE and C-GET (pynetdicom 3.0.4 service_class) -------------------

_WHOLE_RETRIEVES: set[str] = set()
_REPLACED_RETRIEVES: dict[str, Callable[..., None]] = {}


def serve_retrieves_whole(sop_classes: Any) -> None:
    """C-MOVE and C-GET requests on these SOP classes are answered by the bound handler as
    a whole: it yields every response primitive (pending ones and the final one) and
    does its own sub-operations. pynetdicom's ``QueryRetrieveServiceClass._move_scp``
    cannot answer A801 with an ErrorComment, sends only data sets held in memory, and
    opens the sub-association with the listener's timeouts; its ``_get_scp`` likewise
    needs decoded data sets. Other SOP classes keep pynetdicom's own handling."""
    _WHOLE_RETRIEVES.update(str(uid) for uid in sop_classes)
    if _REPLACED_RETRIEVES:
        return
    for name, event in (("_move_scp", evt.EVT_C_MOVE), ("_get_scp", evt.EVT_C_GET)):
        original = getattr(QueryRetrieveServiceClass, name)
        _REPLACED_RETRIEVES[name] = original
        setattr(QueryRetrieveServiceClass, name, _whole_retrieve(original, event))


def _whole_retrieve(original: Callable[..., None], event_type: Any) -> Callable[..., None]:
    def scp(self: Any, req: Any, context: Any) -> None:
        bound = self.assoc.get_handlers(event_type)
        handler, args = bound if isinstance(bound, tuple) else (None, None)
        if str(context.abstract_syntax) not in _WHOLE_RETRIEVES or handler is None:
            original(self, req, context)
            return
        event = evt.Event(
            self.assoc,
            event_type,
            {"request": req, "context": context.as_tuple, "_is_cancelled": self.is_cancelled},
        )
        for rsp in handler(event, *(args or [])):
            rsp.MessageIDBeingRespondedTo = req.MessageID
            rsp.AffectedSOPClassUID = req.AffectedSOPClassUID
            if not self.assoc.is_established:
                return
            self.dimse.send_msg(rsp, context.context_id)

    return scp
