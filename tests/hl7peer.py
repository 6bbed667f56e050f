"""An MLLP peer at the byte level (HL7 v2.5.1 Appendix C: <VT> message <FS><CR>), written
here on a plain socket so the listener is judged by a client that shares none of its code,
and hand-written HL7 v2.5.1 order messages (Chapter 4 ORM^O01 / OMI^O23)."""

from __future__ import annotations

import socket
from dataclasses import dataclass

VT, FS, CR = b"\x0b", b"\x1c", b"\r"


class MllpPeer:
    """One TCP connection to the listener."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = b""

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, payload: bytes) -> None:
        self.sock.sendall(VT + payload + FS + CR)

    def receive(self) -> bytes:
        """The payload of the next block (raises ConnectionError when the peer closes)."""
        while FS + CR not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the listener")
            self._buf += chunk
        block, _, self._buf = self._buf.partition(FS + CR)
        assert block[:1] == VT, block[:20]
        return block[1:]

    def exchange(self, payload: bytes) -> bytes:
        self.send(payload)
        return self.receive()

    def wait_closed(self, timeout: float) -> bool:
        """Read (keeping what arrives) until the listener closes: True, or False at the timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self._buf += chunk
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> MllpPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Ack:
    """An ACK read by splitting on the delimiters: MSA-1, MSA-2, each ERR-2 and ERR-3."""

    code: str
    control_id: str
    errors: list[tuple[str, str]]
    text: str

    @classmethod
    def parse(cls, payload: bytes, codec: str = "ascii") -> Ack:
        text = payload.decode(codec)
        segments = [s.split("|") for s in text.split("\r") if s]
        assert segments[0][0] == "MSH" and segments[0][8].startswith("ACK"), text
        msa = next(s for s in segments if s[0] == "MSA")
        errors = [(s[2], s[3].split("^")[0]) for s in segments if s[0] == "ERR"]
        return cls(msa[1], msa[2] if len(msa) > 2 else "", errors, text)


def msg(*segments: str, codec: str = "ascii") -> bytes:
    """Segments joined with CR and encoded."""
    return "\r".join(segments).encode(codec) + b"\r"


def msh(control_id: str, kind: str = "ORM^O01", charset: str = "", sender: str = "RIS|HOSP") -> str:
    tail = f"||||||{charset}" if charset else ""
    return f"MSH|^~\\&|{sender}|APPLIANCE|RADIO|20261203091500||{kind}|{control_id}|P|2.5.1{tail}"


def orm(
    control_id: str,
    *,
    control: str = "NW",
    placer: str = "PL1001",
    patient_id: str = "P1001",
    name: str = "Doe^John^^^^^L",
    birth: str = "19700101",
    sex: str = "M",
    code: str = "CTCH^CT Chest^LOCAL",
    accession: str = "ACC1001",
    rp_id: str = "RP1001",
    sps_id: str = "SPS1001",
    modality: str = "CT",
    start: str = "202612240930",
    priority: str = "R",
    status: str = "",
    zds: str = "",
    charset: str = "",
    codec: str = "ascii",
) -> bytes:
    """An ORM^O01 (HL7 v2.5.1 4.4.1) with one ORC/TQ1/OBR group."""
    segments = [
        msh(control_id, charset=charset),
        f"PID|1||{patient_id}^^^HOSP^MR||{name}||{birth}|{sex}",
        "PV1|1|O|RAD^R12^B1^HOSP|||||1234^House^Gregory|||||||||||V123",
        f"ORC|{control}|{placer}^RIS|F{placer[2:]}^APPLIANCE||{status}|||||||5678^Wilson^James",
        f"TQ1|1||||||{start}||{priority}",
        f"OBR|1|{placer}^RIS|F{placer[2:]}^APPLIANCE|{code}||||||||||||||{accession}|{rp_id}|{sps_id}||||{modality}|||||||CP^Chest pain^L",
    ]
    if zds:
        segments.append(f"ZDS|{zds}^APPLIANCE^Application^DICOM")
    return msg(*segments, codec=codec)


class FakeRis:
    """A RIS's MLLP listener on a plain socket: keeps each message received and answers it
    with an ACK whose MSA-1 is ``code`` (AA unless told otherwise)."""

    def __init__(self, port: int = 0, code: str = "AA") -> None:
        import threading

        self.code = code
        self.received: list[bytes] = []
        self.server = socket.create_server(("127.0.0.1", port))
        self.port = self.server.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                buf = b""
                while True:
                    while FS + CR not in buf:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        buf += chunk
                    if FS + CR not in buf:
                        break
                    block, _, buf = buf.partition(FS + CR)
                    payload = block[1:]
                    self.received.append(payload)
                    control_id = payload.split(b"\r")[0].split(b"|")[9].decode()
                    ack = (
                        f"MSH|^~\\&|RIS|HOSP|APPLIANCE|APPLIANCE|20261203100000||ACK^O01^ACK|"
                        f"R{len(self.received)}|P|2.5.1\rMSA|{self.code}|{control_id}|as told\r"
                    )
                    conn.sendall(VT + ack.encode() + FS + CR)

    def fields(self, i: int, segment: str, codec: str = "ascii") -> list[str]:
        """The fields of the first ``segment`` of received message i (split on '|')."""
        for seg in self.received[i].decode(codec).split("\r"):
            if seg.startswith(segment + "|"):
                return seg.split("|")
        raise KeyError(segment)

    def close(self) -> None:
        self.server.close()
