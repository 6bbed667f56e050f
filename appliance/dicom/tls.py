"""DICOM TLS (PS3.15 Annex B, BCP 195): the box's certificate and the TLS contexts.

The certificate and key come from ``dicom.tls_cert`` / ``dicom.tls_key``; without them a
self-signed pair (ECDSA P-256, ten years, the host's name and loopback as subject
alternative names) is made in ``DATA_DIR/tls/`` at the first start and kept. Its SHA-256
fingerprint is what a PACS administrator pins or checks (the web page shows it).

Server and client contexts: TLS 1.2 or newer, BCP 195 cipher suites (ECDHE with AES-GCM
or ChaCha20-Poly1305; TLS 1.3 suites as OpenSSL has them). With ``dicom.tls_ca`` set,
a peer on the TLS port must present a certificate that CA signed.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import ipaddress
import logging
import os
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

BCP195_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """The box's own certificate and key in ``directory`` (made once, kept).

    Made under an exclusive lock on ``directory/.lock``: ``serve --only web`` and
    ``serve --only dicom`` started together at the first boot would otherwise each make
    a pair and could leave one's key beside the other's certificate."""
    cert_path, key_path = directory / "appliance.crt", directory / "appliance.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not (cert_path.exists() and key_path.exists()):  # the other one made it meanwhile
            _make_self_signed(cert_path, key_path)
    finally:
        os.close(fd)  # releases the lock
    return cert_path, key_path


def _make_self_signed(cert_path: Path, key_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    host = socket.gethostname() or "appliance"
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(host),
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    tmp_key = key_path.with_suffix(".tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    tmp_key.replace(key_path)
    tmp_cert = cert_path.with_suffix(".tmp")
    tmp_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tmp_cert.replace(cert_path)


def certificate_files(data_dir: Path, cert: str, key: str) -> tuple[Path, Path]:
    """The configured pair, else the self-signed one."""
    if cert and key:
        return Path(cert), Path(key)
    return self_signed(Path(data_dir) / "tls")


def fingerprint(cert_path: Path) -> str:
    """SHA-256 of the certificate (DER), as ``AB:CD:...``."""
    der = ssl.PEM_cert_to_DER_cert(Path(cert_path).read_text())
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _harden(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(BCP195_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return ctx


def server_context(cert: Path, key: Path, ca: str = "") -> ssl.SSLContext:
    """The TLS listener's context; with ``ca``, peers must present a certificate it signed."""
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    ctx.load_cert_chain(str(cert), str(key))
    if ca:
        ctx.load_verify_locations(cafile=ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(ca: str, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """A context toward a TLS peer verified by ``ca`` (a PACS), presenting the box's pair."""
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    if ca:
        ctx.load_verify_locations(cafile=ca)
    else:
        ctx.load_default_certs()
    if cert and key:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def web_certificate(config: Any) -> Path:
    """The certificate file the HTTPS page presents (not made here if it is missing)."""
    web, dicom = config.web, config.dicom
    if web.tls_cert:
        return Path(web.tls_cert)
    if dicom.tls_cert and dicom.tls_key:
        return Path(dicom.tls_cert)
    return Path(config.data_dir) / "tls" / "appliance.crt"


def web_context(config: Any) -> tuple[ssl.SSLContext | None, tuple[Path, Path] | None]:
    """The HTTPS page's context and pair: ``web.tls_cert``/``tls_key``, else the DICOM
    TLS certificate (``dicom.tls_cert``/``tls_key`` or the self-signed one); with
    ``web.https = false``, none. Browsers present no client certificate: no CA here."""
    if not config.web.https:
        return None, None
    web, dicom = config.web, config.dicom
    pair = (
        (Path(web.tls_cert), Path(web.tls_key))
        if web.tls_cert
        else certificate_files(config.data_dir, dicom.tls_cert, dicom.tls_key)
    )
    return server_context(*pair), pair


def pinned_client_context(cert: Path) -> ssl.SSLContext:
    """A client context that trusts exactly this certificate (the box's own, for
    ``appliance status``), whoever signed it; the host name is not checked."""
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    ctx.check_hostname = False
    return ctx


# -- toward peers: PACS destinations, devices that require TLS -------------------------


_failed_here = threading.local()


class _Recording(ssl.SSLSocket):
    """Keeps why a handshake failed on its context: pynetdicom only logs that the
    connection failed, the queue page and the log line need the reason."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except (ssl.SSLError, OSError) as exc:
            self._note(exc)
            raise
        self._check_pin()

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        """With TLS 1.3 the peer's refusal of our certificate arrives as an alert at the
        first read after the handshake."""
        try:
            return super().recv(buflen, flags)
        except ssl.SSLError as exc:
            if "ALERT" in str(exc.reason or ""):
                self._note(exc)
            raise

    def _check_pin(self) -> None:
        """Toward a device that pins its certificate: exactly that one, or no association
        (the handshake did not verify it against a CA: it may well be self-signed)."""
        pin = getattr(self.context, "pinned", "")
        if not pin:
            return
        der = self.getpeercert(binary_form=True)
        got = "sha256:" + hashlib.sha256(der).hexdigest() if der else "(none)"
        if got != pin:
            exc = ssl.SSLCertVerificationError(f"certificate {got} is not the pinned {pin}")
            # First what an ErrorComment (64 characters) can still say; the log has it all.
            exc.verify_message = f"not the pinned one: {got} (pinned: {pin})"
            self._note(exc)
            self.close()
            raise exc

    def _note(self, exc: BaseException) -> None:
        global _last_failure
        self.context.handshake_error = describe(exc)  # type: ignore[attr-defined]
        _failed_here.at = _last_failure = time.monotonic()


_last_failure = -10.0


class _QuietRefusal(logging.Filter):
    """pynetdicom logs a failed connection as ERROR records with a traceback in the DUL
    thread that connected (and "Association Aborted" in the association's thread); after
    a refused TLS handshake the caller logs one line with the reason instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - getattr(_failed_here, "at", -10.0) < 1.0:
            return False
        return not (record.name == "pynetdicom.acse" and now - _last_failure < 1.0
                    and record.getMessage() == "Association Aborted")  # fmt: skip


_QUIET = _QuietRefusal()


def describe(exc: BaseException) -> str:
    """A TLS failure in words: an unknown or expired certificate, a wrong name, ..."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: certificate refused: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError) and "ALERT" in str(exc.reason or ""):
        alert = str(exc.reason).lower().replace("_", " ")
        return f"TLS: the peer refused our certificate ({alert})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or exc})"
    return f"TLS handshake failed ({exc})"


def outbound(
    data_dir: Path, dicom: Any, host: str, ca: str, cert: str = "", key: str = ""
) -> tuple[ssl.SSLContext, str]:
    """pynetdicom's ``tls_args`` toward ``host``: its certificate verified against ``ca``
    (with the host name), the box's own pair (or ``cert``/``key``) as client certificate."""
    pair = (
        (Path(cert), Path(key))
        if cert and key
        else certificate_files(data_dir, dicom.tls_cert, dicom.tls_key)
    )
    ctx = client_context(ca, *pair)
    ctx.sslsocket_class = _Recording
    for name in ("pynetdicom.transport", "pynetdicom.dul", "pynetdicom.acse"):
        if _QUIET not in logging.getLogger(name).filters:
            logging.getLogger(name).addFilter(_QUIET)
    ctx.handshake_error = ""  # type: ignore[attr-defined]
    return ctx, host


def for_destination(config: Any, dest: Any) -> tuple[ssl.SSLContext, str] | None:
    """TLS toward a ``[[destinations]]`` PACS with ``tls = true``, else None."""
    if not dest.tls:
        return None
    return outbound(
        config.data_dir, config.dicom, dest.host, dest.tls_ca, dest.tls_cert, dest.tls_key
    )


def for_device(config: Any, device: Any) -> tuple[ssl.SSLContext, str] | None:
    """TLS toward a device with ``tls = "required"`` or a pinned certificate (C-MOVE
    destination, commitment report). A pinned device must present exactly that
    certificate (self-signed is fine, no CA or name is checked); otherwise its
    certificate is verified against ``dicom.tls_ca`` with its host name."""
    pin = getattr(device, "tls_fingerprint", "")
    if getattr(device, "tls", "") != "required" and not pin:
        return None
    ctx, host = outbound(config.data_dir, config.dicom, device.host, config.dicom.tls_ca)
    if pin:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the pin is the check (_Recording._check_pin)
        ctx.pinned = pin  # type: ignore[attr-defined]
    return ctx, host


def failure(tls_args: tuple[ssl.SSLContext, str] | None) -> str:
    """Why the last handshake with these ``tls_args`` failed ('' = it did not, or no TLS);
    read once: the next attempt starts clean."""
    if tls_args is None:
        return ""
    ctx = tls_args[0]
    why = str(getattr(ctx, "handshake_error", ""))
    ctx.handshake_error = ""  # type: ignore[attr-defined]
    return why
