"""Configuration: an optional TOML file over embedded defaults, validated once at start.

Every setting is a field of a frozen dataclass below, with its documentation in the
field's metadata; ``appliance.example.toml`` documents the same settings and a test
keeps the two in step. Configuration is loaded once in ``cli.main`` and passed down.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance import identifiers
from appliance.errors import ConfigError
from image import film

ENV_CONFIG = "APPLIANCE_CONFIG"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
CHARSETS = (
    "",
    "ISO_IR 6",
    "ISO_IR 100",
    "ISO_IR 192",
    "ISO 2022 IR 87",
    "ISO 2022 IR 13\\ISO 2022 IR 87",
)
DEVICE_ROLES = ("modality", "pacs", "printer-client")
STATION_FILTERS = ("none", "calling-ae")
UNKNOWN_AE_POLICIES = ("verify-only", "reject", "accept")
COMMITMENT_POLICIES = ("pacs", "delivery")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _doc(text: str, default: Any) -> Any:
    return field(default=default, metadata={"doc": text})


def _doc_list(text: str) -> Any:
    return field(default_factory=tuple, metadata={"doc": text})


DEFAULT_DATA_DIR = Path("appliance-data")
# destination.transfer_syntax: the lossless syntaxes a sender may compress to.
LOSSLESS_TARGETS = {
    "jpeg-ls-lossless": "1.2.840.10008.1.2.4.80",
    "jpeg2000-lossless": "1.2.840.10008.1.2.4.90",
}


@dataclass(frozen=True)
class DicomSettings:
    """[dicom]: the DICOM listener shared by every service."""

    ae_title: str = _doc("AE title the appliance answers to (1-16 characters)", "APPLIANCE")
    host: str = _doc("address the DICOM listener binds to", "0.0.0.0")
    port: int = _doc("TCP port of the DICOM listener (0 picks a free port)", 11112)
    max_pdu: int = _doc(
        "largest PDU the appliance receives, in bytes (0 = no limit announced; a PDU is "
        "then still refused above 64 MiB)",
        262144,
    )
    acse_timeout: float = _doc("seconds to wait for association messages", 30.0)
    dimse_timeout: float = _doc("seconds to wait for DIMSE messages", 60.0)
    network_timeout: float = _doc("seconds an idle association stays open", 120.0)
    max_associations: int = _doc(
        "associations served at once; one more is rejected (A-ASSOCIATE-RJ local-limit-exceeded)",
        64,
    )
    max_pending: int = _doc(
        "connections that have not yet sent their A-ASSOCIATE-RQ, at once; one more is "
        "closed at once (port scans and TCP health checks cannot fill the association slots)",
        16,
    )
    max_per_address: int = _doc(
        "connections from one IP address at once (associated or not); one more is refused",
        16,
    )
    associate_timeout: float = _doc(
        "seconds from TCP connect to a complete A-ASSOCIATE-RQ, however slowly it trickles",
        10.0,
    )
    pdu_timeout: float = _doc(
        "seconds one PDU may take to arrive once it has begun, however slowly it trickles",
        30.0,
    )
    query_time_limit: float = _doc(
        "seconds of CPU the matching of one C-FIND may take; then it ends with A700 "
        "'Query exceeded N s' (the matches found so far are sent)",
        10.0,
    )
    tls: bool = _doc("serve DICOM over TLS as well, on tls_port (PS3.15 Annex B, BCP 195)", True)
    tls_port: int = _doc("TCP port of the DICOM TLS listener (0 picks a free port)", 2762)
    tls_cert: str = _doc(
        "certificate file (PEM) of the TLS listener ('' = a self-signed one made in "
        "DATA_DIR/tls/ at the first start)",
        "",
    )
    tls_key: str = _doc("private key file (PEM) of tls_cert", "")
    tls_ca: str = _doc(
        "CA file (PEM): when set, a peer on the TLS port must present a certificate it signed",
        "",
    )
    unknown_ae: str = _doc(
        "what an AE title not listed in [[devices]] may do: verify-only, reject, accept",
        "verify-only",
    )


@dataclass(frozen=True)
class WebSettings:
    """[web]: the web server."""

    host: str = _doc("address the web server binds to", "0.0.0.0")
    https: bool = _doc(
        "serve the page and the API over HTTPS on port (false: plain HTTP on port, for "
        "tests and development only)",
        True,
    )
    port: int = _doc(
        "TCP port of the web page: HTTPS, or plain HTTP when https = false (0 picks a free "
        "port; 443 under the systemd unit)",
        8443,
    )
    http_redirect: bool = _doc(
        "with https: also listen on http_port for plain HTTP, answering only with a "
        "redirect to the HTTPS page",
        True,
    )
    http_port: int = _doc(
        "TCP port of that redirect (0 picks a free port; 80 under the systemd unit)", 8080
    )
    tls_cert: str = _doc(
        "certificate file (PEM) of the HTTPS page ('' = the DICOM TLS certificate: "
        "dicom.tls_cert, or the self-signed one in DATA_DIR/tls/)",
        "",
    )
    tls_key: str = _doc("private key file (PEM) of tls_cert", "")
    threads: int = _doc("worker threads of the web server (requests served at once)", 4)
    max_connections: int = _doc(
        "open connections at once (idle, waiting or served); one more is closed at once", 256
    )
    max_per_address: int = _doc("open connections from one IP address at once", 32)
    header_timeout: float = _doc(
        "seconds a connection has for the TLS handshake, the request line and headers, "
        "however slowly they trickle; also how long an idle connection is kept",
        10.0,
    )


@dataclass(frozen=True)
class ClinicSettings:
    """[clinic]: how the clinic's day is shown."""

    time_zone: str = _doc(
        "IANA time zone every time on the web pages is shown in, e.g. 'Asia/Tokyo' "
        "('' = the box's local zone); stored times do not change",
        "",
    )


@dataclass(frozen=True)
class DicomwebSettings:
    """[dicomweb]: QIDO-RS, WADO-RS, STOW-RS and the worklist over REST under /dicomweb."""

    max_body_mb: int = _doc("largest STOW-RS request body in MB (larger gets 413)", 512)
    max_results: int = _doc(
        "most QIDO-RS results in one response (more: a Warning header says how many)", 1000
    )
    source_ae: str = _doc(
        "the calling AE title STOW-RS uploads are routed as (destinations' from_ae)", "DICOMWEB"
    )


@dataclass(frozen=True)
class LoggingSettings:
    """[logging]: log lines on stderr (journald under systemd), optionally also a file."""

    level: str = _doc("DEBUG, INFO, WARNING or ERROR; patient data appears only at DEBUG", "INFO")
    file: str = _doc(
        "also write the log to this file, rotated by size ('' = stderr only; a relative "
        "path is inside data_dir)",
        "",
    )
    max_mb: int = _doc("size in MB at which the log file is rotated", 10)
    backups: int = _doc("rotated log files kept (FILE.1 ... FILE.N)", 5)


@dataclass(frozen=True)
class DeviceSettings:
    """[[devices]]: a modality or other peer allowed to talk to the appliance."""

    ae_title: str = _doc("the device's AE title (required)", "")
    host: str = _doc(
        "the device's host, for Storage Commitment reports, C-ECHO and as a C-MOVE destination", ""
    )
    port: int = _doc("the device's DICOM port (0 = unknown)", 0)
    role: str = _doc("modality, pacs or printer-client", "modality")
    description: str = _doc("free text shown in the web UI", "")
    modality: str = _doc("modality code of this station (CT, MR, US...) for the schedule form", "")
    station_filter: str = _doc(
        "worklist: none, or calling-ae to use the calling AE title when the query names no station",
        "none",
    )
    hide_completed: bool = _doc("worklist: hide completed and discontinued steps", True)
    character_set: str = _doc(
        "worklist: Specific Character Set of responses ('' = as the query declared, else UTF-8)",
        "",
    )
    max_results: int = _doc("worklist: most items returned for one query (0 = no limit)", 0)
    tls: str = _doc(
        "optional (plain or TLS port) or required (refused on the plain port: A-ASSOCIATE-RJ)",
        "optional",
    )
    tls_fingerprint: str = _doc(
        "pin the device's certificate: 'sha256:' and its SHA-256 (hex, colons allowed). "
        "Inbound, another certificate, or none, is refused on the TLS port, and the plain "
        "port is refused too (the certificate must also be signed by dicom.tls_ca). "
        "Outbound (C-MOVE, commitment reports), the box goes over TLS and accepts exactly "
        "this certificate, self-signed or not",
        "",
    )


@dataclass(frozen=True)
class DestinationSettings:
    """[[destinations]]: a PACS the forwarder sends to."""

    name: str = _doc("a short unique name (required)", "")
    ae_title: str = _doc("the PACS's AE title (required)", "")
    host: str = _doc("the PACS's host (required)", "")
    port: int = _doc("the PACS's DICOM port (required)", 104)
    from_ae: tuple[str, ...] = _doc(
        "routing: calling AE titles whose images go here (empty = any)", ()
    )
    modalities: tuple[str, ...] = _doc("routing: Modality values that go here (empty = any)", ())
    sop_classes: tuple[str, ...] = _doc("routing: SOP Class UIDs that go here (empty = any)", ())
    commitment: str = _doc(
        "Storage Commitment: pacs (ask this PACS, answer the modality when it commits) "
        "or delivery (a Success C-STORE counts as committed, for a PACS without commitment)",
        "pacs",
    )
    transfer_syntax: str = _doc(
        "compress uncompressed images losslessly before sending, for a PACS behind a slow "
        "link: jpeg-ls-lossless or jpeg2000-lossless ('' = send as stored)",
        "",
    )
    tls: bool = _doc(
        "send over DICOM TLS (PS3.15 Annex B, BCP 195): the PACS's certificate is verified "
        "against tls_ca and its host name; the box presents its own certificate",
        False,
    )
    tls_ca: str = _doc(
        "CA file (PEM) that signed the PACS's certificate ('' = the system's CA store)", ""
    )
    tls_cert: str = _doc(
        "client certificate (PEM) toward this PACS ('' = the box's: dicom.tls_cert or the "
        "self-signed one)",
        "",
    )
    tls_key: str = _doc("private key file (PEM) of tls_cert", "")


@dataclass(frozen=True)
class ForwardSettings:
    """[forward]: the store-and-forward spool and its senders."""

    reserve_mb: int = _doc(
        "free space (MB) kept on the spool's file system; below it C-STORE gets A700", 1024
    )
    retention_hours: float = _doc(
        "hours a delivered (or committed) file stays in the spool before it is deleted", 24.0
    )
    budget_mb: int = _doc(
        "most MB of delivered files kept in the spool; oldest delivered go first (0 = no cap)", 0
    )
    batch_size: int = _doc("most instances sent on one association before it is reused", 50)
    associations: int = _doc("parallel associations (worker threads) per destination", 1)
    retry_initial: float = _doc("seconds before the first retry after a transient failure", 2.0)
    retry_max: float = _doc(
        "longest wait between retries, in seconds (exponential, jittered)", 300.0
    )
    max_attempts: int = _doc(
        "transient failures before an instance is dead-lettered (0 = retry for ever)", 0
    )
    idle_release: float = _doc("seconds an idle association to a PACS stays open", 2.0)
    prefer: str = _doc(
        "transfer syntax accepted when a modality offers several in one presentation "
        "context: lossless (a lossless compressed one first, then explicit VR) or "
        "uncompressed (explicit VR first)",
        "lossless",
    )
    stall_minutes: float = _doc(
        "minutes a destination may make no progress while items wait before the queue page, "
        "/healthz and `appliance forward status` say it is stalled (0 = never)",
        15.0,
    )
    commitment_timeout: float = _doc(
        "seconds to wait for a PACS's commitment before reporting failure to the modality", 600.0
    )
    spool: str = _doc(
        "where received images are kept: journal (appended to preallocated segment files, "
        "one data sync per image) or files (a file per image); both are read, so images "
        "kept the other way are sent until drained",
        "files",
    )
    journal_segment_mb: int = _doc(
        "size (MiB) of one journal segment file, reserved when the segment is made", 256
    )


@dataclass(frozen=True)
class PrinterSettings:
    """[[printers]]: where films are printed."""

    name: str = _doc("a short unique name (required)", "")
    uri: str = _doc(
        "folder:PATH (PDF and PNG), ipp://HOST:PORT/PATH or cups:QUEUE", "folder:prints"
    )


@dataclass(frozen=True)
class PrintProfileSettings:
    """[[print_profiles]]: how films addressed to one called AE title are printed."""

    ae_title: str = _doc(
        "called AE title modalities print to ('' = the appliance's own dicom.ae_title)", ""
    )
    printer: str = _doc("name of a [[printers]] entry ('' = the first, else the prints folder)", "")
    paper: str = _doc(
        "paper: auto (the film's size, or the printer's best media), A4, A3, LETTER, LEGAL, TABLOID",
        "auto",
    )
    paper_for_film: str = _doc(
        "paper per Film Size ID, space-separated FILM=PAPER pairs overriding paper, "
        "e.g. '14INX17IN=A3 8INX10IN=LETTER'",
        "",
    )
    fit: bool = _doc("fit the film to the paper; false prints it true size, centred, cropped", True)
    film_sizes: str = _doc("Film Size IDs accepted, space-separated ('' = all)", "")
    display_formats: str = _doc(
        "Image Display Formats accepted, space-separated, e.g. 'STANDARD\\2,2 ROW\\1,2' ('' = all)",
        "",
    )
    default_film_size: str = _doc("Film Size ID when the modality sends none", "14INX17IN")
    default_magnification: str = _doc(
        "Magnification Type when none is sent: REPLICATE, BILINEAR, CUBIC or NONE", "CUBIC"
    )
    border_density: str = _doc(
        "Border Density when none is sent: BLACK, WHITE or hundredths OD", "WHITE"
    )
    empty_image_density: str = _doc(
        "Empty Image Density when none is sent: BLACK, WHITE or hundredths OD", "WHITE"
    )
    min_density: int = _doc("Min Density when none is sent, hundredths of OD", 10)
    max_density: int = _doc("Max Density when none is sent, hundredths of OD", 200)
    paper_max_density: int = _doc(
        "darkest density the paper reaches, hundredths of OD (higher requests warn B605)", 200
    )
    color: bool = _doc("print in colour; false prints every page in grey", True)
    footer: bool = _doc("print a footer: film session label, date, page n of m", False)
    dpi: int = _doc("printer resolution in dots per inch", 300)
    job_events: bool = _doc(
        "send Print Job and Printer N-EVENT-REPORTs to the SCU; off by default, as an SCU must "
        "take them even while it waits for a response (pynetdicom's SCU cannot)",
        False,
    )


HL7_CHARSETS = (
    "ASCII",
    "8859/1",
    "UNICODE UTF-8",
    "ISO IR87",
    "SHIFT_JIS",
)


@dataclass(frozen=True)
class Hl7OutboundSettings:
    """[[hl7.outbound]]: a RIS told of step status changes (ORM^O01 ORC-1 SC) over MLLP."""

    name: str = _doc("a short unique name (required)", "")
    host: str = _doc("the RIS's HL7 host (required)", "")
    port: int = _doc("the RIS's HL7 port (required)", 2575)
    receiving_application: str = _doc("MSH-5 of the messages sent", "")
    receiving_facility: str = _doc("MSH-6 of the messages sent", "")
    charset: str = _doc(
        "MSH-18 of the messages sent: ASCII, 8859/1, UNICODE UTF-8, ISO IR87 or SHIFT_JIS "
        "('' = hl7.charset)",
        "",
    )
    timeout: float = _doc("seconds to connect and to wait for the ACK", 10.0)
    retry_initial: float = _doc("seconds before the first retry", 5.0)
    retry_max: float = _doc("longest wait between retries, in seconds (exponential)", 300.0)
    max_attempts: int = _doc(
        "failed attempts before a message is dead-lettered (0 = retry for ever)", 0
    )


@dataclass(frozen=True)
class Hl7Settings:
    """[hl7]: the inbound HL7 v2 listener (MLLP) that turns RIS orders into worklist steps."""

    enabled: bool = _doc("listen for HL7 v2 orders (ORM^O01, OMI^O23) over MLLP", False)
    host: str = _doc("address the HL7 listener binds to", "0.0.0.0")
    port: int = _doc("TCP port of the HL7 listener (0 picks a free port)", 2575)
    allowed_senders: tuple[str, ...] = _doc(
        "sending applications accepted, as 'APP^FACILITY' or 'APP' (MSH-3^MSH-4); "
        "'*' accepts any; empty = none (every message gets AR)",
        (),
    )
    charset: str = _doc(
        "character set of messages whose MSH-18 is empty: ASCII, 8859/1, UNICODE UTF-8, "
        "ISO IR87 or SHIFT_JIS",
        "ASCII",
    )
    stations: tuple[str, ...] = _doc(
        "scheduled station AE title per modality for orders that name none, as a table "
        '{ CT = "CT1", MR = "MR1" }',
        (),
    )
    max_message_kb: int = _doc(
        "largest message accepted, in KiB; a larger one gets AR and the connection is closed",
        1024,
    )
    idle_timeout: float = _doc(
        "seconds a connection may wait for its next complete message (silent or trickling) "
        "before it is closed",
        300.0,
    )
    max_connections: int = _doc(
        "connections served at once; one more closes the one waiting longest (one that never "
        "sent a message first), else is closed itself",
        16,
    )
    outbound: tuple[Hl7OutboundSettings, ...] = _doc_list(
        "RIS told when MPPS starts, completes or discontinues a step of their order"
    )

    def station_for(self, modality: str) -> str:
        """The station AE title mapped to this modality, or ''."""
        for pair in self.stations:
            key, _, ae = pair.partition("=")
            if key == modality:
                return ae
        return ""


@dataclass(frozen=True)
class Config:
    """The whole configuration, as loaded at start."""

    data_dir: Path = _doc("directory for the database, spool/ and prints/", DEFAULT_DATA_DIR)
    dicom: DicomSettings = field(default_factory=DicomSettings)
    web: WebSettings = field(default_factory=WebSettings)
    clinic: ClinicSettings = field(default_factory=ClinicSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    forward: ForwardSettings = field(default_factory=ForwardSettings)
    hl7: Hl7Settings = field(default_factory=Hl7Settings)
    dicomweb: DicomwebSettings = field(default_factory=DicomwebSettings)
    devices: tuple[DeviceSettings, ...] = _doc_list("modalities and peers allowed to talk")
    destinations: tuple[DestinationSettings, ...] = _doc_list("PACS the forwarder sends to")
    printers: tuple[PrinterSettings, ...] = _doc_list(
        "printers films go to (managed by the file; the web page Printers adds more)"
    )
    print_profiles: tuple[PrintProfileSettings, ...] = _doc_list("print profiles per called AE")

    def device(self, ae_title: str) -> DeviceSettings | None:
        """The configured device with this AE title, if any."""
        key = ae_title.strip()
        for dev in self.devices:
            if dev.ae_title == key:
                return dev
        return None


SECTIONS: dict[str, type] = {
    "dicom": DicomSettings,
    "web": WebSettings,
    "clinic": ClinicSettings,
    "logging": LoggingSettings,
    "forward": ForwardSettings,
    "hl7": Hl7Settings,
    "dicomweb": DicomwebSettings,
}
TABLES: dict[str, type] = {
    "devices": DeviceSettings,
    "destinations": DestinationSettings,
    "printers": PrinterSettings,
    "print_profiles": PrintProfileSettings,
}


def documented_settings() -> list[tuple[str, str, str]]:
    """Every setting as (section, key, doc); a test checks each is in the example file."""
    out = [("", "data_dir", Config.__dataclass_fields__["data_dir"].metadata["doc"])]
    for section, cls in {**SECTIONS, **TABLES, "hl7.outbound": Hl7OutboundSettings}.items():
        for f in dataclasses.fields(cls):
            out.append((section, f.name, f.metadata["doc"]))
    return out


def validate_ae_title(value: str, setting: str) -> str:
    """PS3.5 AE VR: 1-16 characters, no backslash, no control characters, not all spaces."""
    if not isinstance(value, str):
        raise ConfigError(setting, "must be a string")
    problem = identifiers.ae_title_problem(value)
    if problem is not None:
        raise ConfigError(setting, problem)
    return value.strip(" ")


def _check_port(value: Any, setting: str, allow_zero: bool = True) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(setting, f"{value!r} is not an integer")
    low = 0 if allow_zero else 1
    if not low <= value <= 65535:
        raise ConfigError(setting, f"{value} is not a port number ({low}-65535)")
    return value


def _check_host(value: Any, setting: str, required: bool = False) -> str:
    if not isinstance(value, str):
        raise ConfigError(setting, "must be a string")
    if not value:
        if required:
            raise ConfigError(setting, "is required")
        return value
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if len(value) > 253 or not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", value):
        raise ConfigError(setting, f"{value!r} is neither an IP address nor a host name")
    return value


def _check_choice(value: Any, setting: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(setting, f"{value!r} is not one of {', '.join(map(repr, choices))}")
    return str(value)


def _coerce(cls: type, raw: Mapping[str, Any], where: str) -> Any:
    """Build a settings dataclass from a TOML table, rejecting unknown keys and bad types."""
    if not isinstance(raw, Mapping):
        raise ConfigError(where, "must be a table")
    fields_by_name = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields_by_name:
            raise ConfigError(f"{where}.{key}", "is not a known setting")
        expected = type(fields_by_name[key].default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if expected is tuple and isinstance(value, list):
            if not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where}.{key}", "must be a list of strings")
            value = tuple(value)
        if expected is int and isinstance(value, bool):
            raise ConfigError(f"{where}.{key}", f"{value!r} is not an integer")
        if not isinstance(value, expected):
            raise ConfigError(f"{where}.{key}", f"{value!r} is not of type {expected.__name__}")
        values[key] = value
    return cls(**values)


def _validate_dicom(d: DicomSettings) -> DicomSettings:
    ae = validate_ae_title(d.ae_title, "dicom.ae_title")
    _check_host(d.host, "dicom.host", required=True)
    _check_port(d.port, "dicom.port")
    _check_port(d.tls_port, "dicom.tls_port")
    if d.tls and d.tls_port and d.tls_port == d.port:
        raise ConfigError("dicom.tls_port", "must differ from dicom.port")
    if bool(d.tls_cert) != bool(d.tls_key):
        raise ConfigError(
            "dicom.tls_key" if d.tls_cert else "dicom.tls_cert", "give both or neither"
        )
    files: dict[str, Any] = {}
    for name in ("tls_cert", "tls_key", "tls_ca"):
        value = getattr(d, name)
        if value and not Path(value).expanduser().is_file():
            raise ConfigError(f"dicom.{name}", f"{value} is not a readable file")
        files[name] = str(Path(value).expanduser().absolute()) if value else ""
    d = dataclasses.replace(d, **files)
    if d.max_pdu < 0:
        raise ConfigError("dicom.max_pdu", "must be 0 (unlimited) or a positive number of bytes")
    for name in (
        "acse_timeout", "dimse_timeout", "network_timeout", "associate_timeout", "pdu_timeout",
        "query_time_limit",
    ):  # fmt: skip
        if getattr(d, name) <= 0:
            raise ConfigError(f"dicom.{name}", "must be a positive number of seconds")
    if not 1 <= d.max_associations <= 1024:
        raise ConfigError(
            "dicom.max_associations", f"{d.max_associations} is not between 1 and 1024"
        )
    for name in ("max_pending", "max_per_address"):
        if not 1 <= getattr(d, name) <= 1024:
            raise ConfigError(f"dicom.{name}", f"{getattr(d, name)} is not between 1 and 1024")
    _check_choice(d.unknown_ae, "dicom.unknown_ae", UNKNOWN_AE_POLICIES)
    return dataclasses.replace(d, ae_title=ae)


def _validate_web(w: WebSettings) -> WebSettings:
    _check_host(w.host, "web.host", required=True)
    _check_port(w.port, "web.port")
    _check_port(w.http_port, "web.http_port")
    if w.https and w.http_redirect and w.http_port == w.port != 0:
        raise ConfigError("web.http_port", f"{w.http_port} is also web.port (the HTTPS port)")
    if bool(w.tls_cert) != bool(w.tls_key):
        raise ConfigError("web.tls_key" if w.tls_cert else "web.tls_cert", "is needed as well")
    for name in ("tls_cert", "tls_key"):
        value = getattr(w, name)
        if value and not Path(value).expanduser().is_file():
            raise ConfigError(f"web.{name}", f"{value} is not a readable file")
    if not 1 <= w.threads <= 64:
        raise ConfigError("web.threads", f"{w.threads} is not between 1 and 64")
    if not w.threads <= w.max_connections <= 65536:
        raise ConfigError(
            "web.max_connections", f"{w.max_connections} is not between threads and 65536"
        )
    if not 1 <= w.max_per_address <= w.max_connections:
        raise ConfigError(
            "web.max_per_address", f"{w.max_per_address} is not between 1 and max_connections"
        )
    if not 0.5 <= w.header_timeout <= 300:
        raise ConfigError("web.header_timeout", f"{w.header_timeout} is not between 0.5 and 300")
    return w


def _validate_clinic(c: ClinicSettings) -> ClinicSettings:
    if c.time_zone:
        try:
            zoneinfo.ZoneInfo(c.time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(
                "clinic.time_zone",
                f"{c.time_zone!r} is not a time zone name such as 'Asia/Tokyo' or 'UTC'",
            ) from exc
    return c


def _validate_logging(lg: LoggingSettings) -> LoggingSettings:
    level = _check_choice(lg.level.upper(), "logging.level", LOG_LEVELS)
    if not 1 <= lg.max_mb <= 10_000:
        raise ConfigError("logging.max_mb", f"{lg.max_mb} is not between 1 and 10000")
    if not 0 <= lg.backups <= 100:
        raise ConfigError("logging.backups", f"{lg.backups} is not between 0 and 100")
    if _CONTROL.search(lg.file):
        raise ConfigError("logging.file", "contains a control character")
    return dataclasses.replace(lg, level=level)


def validate_device(d: DeviceSettings, where: str) -> DeviceSettings:
    """A ``[[devices]]`` entry (or a device from the web), ConfigError naming ``where.field``."""
    ae = validate_ae_title(d.ae_title, f"{where}.ae_title")
    _check_host(d.host, f"{where}.host")
    _check_port(d.port, f"{where}.port")
    _check_choice(d.role, f"{where}.role", DEVICE_ROLES)
    _check_choice(d.station_filter, f"{where}.station_filter", STATION_FILTERS)
    _check_choice(d.character_set, f"{where}.character_set", CHARSETS)
    if d.modality and not re.fullmatch(r"[A-Z0-9_]{1,16}", d.modality):
        raise ConfigError(f"{where}.modality", f"{d.modality!r} is not a modality code (CT, MR...)")
    if d.max_results < 0:
        raise ConfigError(f"{where}.max_results", "must be 0 (no limit) or positive")
    _check_choice(d.tls, f"{where}.tls", ("optional", "required"))
    pin = normal_fingerprint(d.tls_fingerprint, f"{where}.tls_fingerprint")
    return dataclasses.replace(d, ae_title=ae, tls_fingerprint=pin)


def normal_fingerprint(value: str, setting: str) -> str:
    """'sha256:' and 64 lower-case hex digits, from that or 'AB:CD:...' ('' stays '')."""
    text = value.strip()
    if not text:
        return ""
    digits = text.removeprefix("sha256:").removeprefix("SHA256:").replace(":", "").lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digits):
        raise ConfigError(setting, "must be 'sha256:' and the certificate's 64 hex digits")
    return f"sha256:{digits}"


def validate_destination(d: DestinationSettings, where: str) -> DestinationSettings:
    """A ``[[destinations]]`` entry (or one from the web), ConfigError naming the field."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", d.name):
        raise ConfigError(f"{where}.name", f"{d.name!r} must be 1-32 letters, digits, '_' or '-'")
    ae = validate_ae_title(d.ae_title, f"{where}.ae_title")
    _check_host(d.host, f"{where}.host", required=True)
    _check_port(d.port, f"{where}.port", allow_zero=False)
    from_ae = tuple(validate_ae_title(a, f"{where}.from_ae") for a in d.from_ae)
    modalities = tuple(m.strip().upper() for m in d.modalities)
    if not all(re.fullmatch(r"[A-Z0-9_ ]{1,16}", m) for m in modalities):
        raise ConfigError(f"{where}.modalities", "must be Modality codes such as CT or MR")
    if not all(identifiers.is_uid(u) for u in d.sop_classes):
        raise ConfigError(f"{where}.sop_classes", "must be SOP Class UIDs (digits and dots)")
    _check_choice(d.commitment, f"{where}.commitment", COMMITMENT_POLICIES)
    _check_choice(d.transfer_syntax, f"{where}.transfer_syntax", ("", *LOSSLESS_TARGETS))
    if bool(d.tls_cert) != bool(d.tls_key):
        raise ConfigError(
            f"{where}.tls_key" if d.tls_cert else f"{where}.tls_cert", "is needed as well"
        )
    files: dict[str, Any] = {}
    for name in ("tls_ca", "tls_cert", "tls_key"):
        value = getattr(d, name)
        if value and not Path(value).expanduser().is_file():
            raise ConfigError(f"{where}.{name}", f"{value} is not a readable file")
        files[name] = str(Path(value).expanduser().absolute()) if value else ""
    return dataclasses.replace(d, ae_title=ae, from_ae=from_ae, modalities=modalities, **files)


def _validate_forward(f: ForwardSettings) -> ForwardSettings:
    for name in ("reserve_mb", "budget_mb", "max_attempts", "stall_minutes"):
        if getattr(f, name) < 0:
            raise ConfigError(f"forward.{name}", "must be 0 or positive")
    if not 1 <= f.associations <= 8:
        raise ConfigError("forward.associations", f"{f.associations} is not between 1 and 8")
    if not 1 <= f.batch_size <= 10_000:
        raise ConfigError("forward.batch_size", f"{f.batch_size} is not between 1 and 10000")
    for name in ("retry_initial", "retry_max", "idle_release", "commitment_timeout"):
        if getattr(f, name) <= 0:
            raise ConfigError(f"forward.{name}", "must be a positive number of seconds")
    if f.retry_max < f.retry_initial:
        raise ConfigError("forward.retry_max", "must not be below forward.retry_initial")
    if f.retention_hours < 0:
        raise ConfigError("forward.retention_hours", "must be 0 or positive")
    _check_choice(f.prefer, "forward.prefer", ("lossless", "uncompressed"))
    _check_choice(f.spool, "forward.spool", ("journal", "files"))
    if not 1 <= f.journal_segment_mb <= 4096:
        raise ConfigError(
            "forward.journal_segment_mb", f"{f.journal_segment_mb} is not between 1 and 4096"
        )
    return f


def _coerce_hl7(raw: Any) -> Hl7Settings:
    """[hl7], whose ``stations`` is a table MODALITY = "AE" kept as ("MODALITY=AE", ...)."""
    if not isinstance(raw, Mapping):
        raise ConfigError("hl7", "must be a table")
    rest = {k: v for k, v in raw.items() if k not in ("stations", "outbound")}
    stations = raw.get("stations", {})
    if not isinstance(stations, Mapping):
        raise ConfigError("hl7.stations", 'must be a table such as { CT = "CT1" }')
    pairs = []
    for modality, ae in stations.items():
        if not re.fullmatch(r"[A-Z0-9_]{1,16}", modality):
            raise ConfigError("hl7.stations", f"{modality!r} is not a modality code (CT, MR...)")
        if not isinstance(ae, str):
            raise ConfigError(f"hl7.stations.{modality}", "must be an AE title string")
        pairs.append(f"{modality}={validate_ae_title(ae, f'hl7.stations.{modality}')}")
    rows = raw.get("outbound", [])
    if not isinstance(rows, list):
        raise ConfigError("hl7.outbound", "must be an array of tables ([[hl7.outbound]])")
    outbound = tuple(
        _validate_hl7_outbound(
            _coerce(Hl7OutboundSettings, row, f"hl7.outbound[{i}]"), f"hl7.outbound[{i}]"
        )
        for i, row in enumerate(rows)
    )
    _unique(outbound, "name", "hl7.outbound")
    return dataclasses.replace(
        _coerce(Hl7Settings, rest, "hl7"), stations=tuple(pairs), outbound=outbound
    )


def _validate_hl7_outbound(o: Hl7OutboundSettings, where: str) -> Hl7OutboundSettings:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", o.name):
        raise ConfigError(f"{where}.name", f"{o.name!r} must be 1-32 letters, digits, '_' or '-'")
    _check_host(o.host, f"{where}.host", required=True)
    _check_port(o.port, f"{where}.port", allow_zero=False)
    for name in ("receiving_application", "receiving_facility"):
        if re.search(r"[|^~\\&]", getattr(o, name)) or _CONTROL.search(getattr(o, name)):
            raise ConfigError(f"{where}.{name}", "must not contain HL7 delimiters")
    charset = o.charset.strip().upper()
    if charset:
        _check_choice(charset, f"{where}.charset", HL7_CHARSETS)
    for name in ("timeout", "retry_initial", "retry_max"):
        if getattr(o, name) <= 0:
            raise ConfigError(f"{where}.{name}", "must be a positive number of seconds")
    if o.retry_max < o.retry_initial:
        raise ConfigError(f"{where}.retry_max", "must not be below retry_initial")
    if o.max_attempts < 0:
        raise ConfigError(f"{where}.max_attempts", "must be 0 (for ever) or positive")
    return dataclasses.replace(o, charset=charset)


def _validate_dicomweb(d: DicomwebSettings) -> DicomwebSettings:
    if not 1 <= d.max_body_mb <= 65536:
        raise ConfigError("dicomweb.max_body_mb", f"{d.max_body_mb} is not between 1 and 65536")
    if not 1 <= d.max_results <= 100000:
        raise ConfigError("dicomweb.max_results", f"{d.max_results} is not between 1 and 100000")
    return dataclasses.replace(d, source_ae=validate_ae_title(d.source_ae, "dicomweb.source_ae"))


def _validate_hl7(h: Hl7Settings) -> Hl7Settings:
    _check_host(h.host, "hl7.host", required=True)
    _check_port(h.port, "hl7.port")
    senders = []
    for sender in h.allowed_senders:
        sender = sender.strip()
        parts = sender.split("^")
        if sender != "*" and (len(parts) > 2 or not parts[0] or _CONTROL.search(sender)):
            raise ConfigError(
                "hl7.allowed_senders", f"{sender!r} is not 'APP^FACILITY', 'APP' or '*'"
            )
        senders.append(sender)
    charset = h.charset.strip().upper()
    _check_choice(charset, "hl7.charset", HL7_CHARSETS)
    if not 1 <= h.max_message_kb <= 65536:
        raise ConfigError("hl7.max_message_kb", f"{h.max_message_kb} is not between 1 and 65536")
    if h.idle_timeout <= 0:
        raise ConfigError("hl7.idle_timeout", "must be a positive number of seconds")
    if not 1 <= h.max_connections <= 1024:
        raise ConfigError("hl7.max_connections", f"{h.max_connections} is not between 1 and 1024")
    return dataclasses.replace(h, allowed_senders=tuple(senders), charset=charset)


def validate_printer(p: PrinterSettings, where: str) -> PrinterSettings:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", p.name):
        raise ConfigError(f"{where}.name", f"{p.name!r} must be 1-32 letters, digits, '_' or '-'")
    scheme, sep, rest = p.uri.partition(":")
    if not sep or scheme not in ("folder", "ipp", "ipps", "cups") or not rest:
        raise ConfigError(
            f"{where}.uri", f"{p.uri!r} is not folder:PATH, ipp://HOST[:PORT]/PATH or cups:QUEUE"
        )
    return p


def _validate_print_profile(p: PrintProfileSettings, where: str) -> PrintProfileSettings:
    ae = validate_ae_title(p.ae_title, f"{where}.ae_title") if p.ae_title else ""
    paper = p.paper.upper()
    if paper != "AUTO" and paper not in film.PAPER_SIZES_MM:
        choices = ", ".join(["auto", *film.PAPER_SIZES_MM])
        raise ConfigError(f"{where}.paper", f"{p.paper!r} is not one of {choices}")
    for pair in p.paper_for_film.split():
        film_id, eq, paper_name = pair.partition("=")
        if (
            not eq
            or film_id not in film.FILM_SIZES_MM
            or paper_name.upper() not in film.PAPER_SIZES_MM
        ):
            raise ConfigError(
                f"{where}.paper_for_film", f"{pair!r} is not FILM_SIZE_ID=PAPER (A4, A3, LETTER...)"
            )
    for size in [*p.film_sizes.split(), p.default_film_size]:
        if size not in film.FILM_SIZES_MM:
            raise ConfigError(f"{where}.film_sizes", f"{size!r} is not a Film Size ID")
    if p.film_sizes and p.default_film_size not in p.film_sizes.split():
        raise ConfigError(f"{where}.default_film_size", "must be one of film_sizes")
    for fmt in p.display_formats.split():
        try:
            film.parse_display_format(fmt)
        except film.LayoutError as exc:
            raise ConfigError(f"{where}.display_formats", str(exc)) from exc
    _check_choice(p.default_magnification, f"{where}.default_magnification", film.MAGNIFICATIONS)
    for name in ("border_density", "empty_image_density"):
        value = getattr(p, name)
        if value not in ("BLACK", "WHITE") and not re.fullmatch(r"\d{1,3}", value):
            raise ConfigError(f"{where}.{name}", f"{value!r} is not BLACK, WHITE or hundredths OD")
    for name in ("min_density", "max_density", "paper_max_density"):
        if not 0 <= getattr(p, name) <= 400:
            raise ConfigError(f"{where}.{name}", "must be between 0 and 400 hundredths of OD")
    if p.min_density >= p.max_density:
        raise ConfigError(f"{where}.min_density", "must be below max_density")
    if not 20 <= p.dpi <= 1200:
        raise ConfigError(f"{where}.dpi", f"{p.dpi} is not between 20 and 1200")
    return dataclasses.replace(p, ae_title=ae, paper=paper.lower() if paper == "AUTO" else paper)


def _unique(items: tuple[Any, ...], attr: str, where: str) -> None:
    seen: set[str] = set()
    for i, item in enumerate(items):
        value = getattr(item, attr)
        if value in seen:
            raise ConfigError(f"{where}[{i}].{attr}", f"{value!r} appears twice")
        seen.add(value)


def from_mapping(raw: Mapping[str, Any], base_dir: Path | None = None) -> Config:
    """Validate a parsed TOML document and build the Config; raises ConfigError."""
    known = {"data_dir", *SECTIONS, *TABLES}
    for key in raw:
        if key not in known:
            raise ConfigError(key, "is not a known section or setting")
    kwargs: dict[str, Any] = {}
    if "data_dir" in raw:
        if not isinstance(raw["data_dir"], str) or not raw["data_dir"]:
            raise ConfigError("data_dir", "must be a non-empty path")
        path = Path(raw["data_dir"]).expanduser()
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        kwargs["data_dir"] = path.absolute()
    else:
        # Made absolute once, here: a relative path would be looked up elsewhere by code
        # that runs with another working directory (Flask's send_file, say).
        kwargs["data_dir"] = DEFAULT_DATA_DIR.absolute()
    kwargs["dicom"] = _validate_dicom(_coerce(DicomSettings, raw.get("dicom", {}), "dicom"))
    kwargs["web"] = _validate_web(_coerce(WebSettings, raw.get("web", {}), "web"))
    kwargs["clinic"] = _validate_clinic(_coerce(ClinicSettings, raw.get("clinic", {}), "clinic"))
    kwargs["logging"] = _validate_logging(
        _coerce(LoggingSettings, raw.get("logging", {}), "logging")
    )
    kwargs["forward"] = _validate_forward(
        _coerce(ForwardSettings, raw.get("forward", {}), "forward")
    )
    kwargs["hl7"] = _validate_hl7(_coerce_hl7(raw.get("hl7", {})))
    kwargs["dicomweb"] = _validate_dicomweb(
        _coerce(DicomwebSettings, raw.get("dicomweb", {}), "dicomweb")
    )
    validators: dict[str, Callable[[Any, str], Any]] = {
        "devices": validate_device,
        "destinations": validate_destination,
        "printers": validate_printer,
        "print_profiles": _validate_print_profile,
    }
    for table, cls in TABLES.items():
        rows = raw.get(table, [])
        if not isinstance(rows, list):
            raise ConfigError(table, f"must be an array of tables ([[{table}]])")
        built = tuple(
            validators[table](_coerce(cls, row, f"{table}[{i}]"), f"{table}[{i}]")
            for i, row in enumerate(rows)
        )
        _unique(built, "ae_title" if table in ("devices", "print_profiles") else "name", table)
        kwargs[table] = built
    return Config(**kwargs)


def load(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load the TOML file named by ``path`` or $APPLIANCE_CONFIG, else the embedded defaults."""
    env = os.environ if env is None else env
    if path is None and env.get(ENV_CONFIG):
        path = Path(env[ENV_CONFIG])
    if path is None:
        return from_mapping({})
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot be read: {exc.strerror}") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"is not valid TOML: {exc}") from exc
    return from_mapping(raw)


def with_overrides(config: Config, **changes: Any) -> Config:
    """Apply command-line overrides such as data_dir or ports, validated like the file."""
    dicom = config.dicom
    web = config.web
    top: dict[str, Any] = {}
    for key, value in changes.items():
        if value is None:
            continue
        if key == "data_dir":
            top["data_dir"] = Path(value).expanduser().absolute()
        elif key == "dicom_port":
            dicom = dataclasses.replace(dicom, port=_check_port(value, "dicom.port"))
        elif key == "dicom_tls_port":
            dicom = dataclasses.replace(dicom, tls_port=_check_port(value, "dicom.tls_port"))
        elif key == "web_port":
            web = dataclasses.replace(web, port=_check_port(value, "web.port"))
        elif key == "web_http_port":
            web = dataclasses.replace(web, http_port=_check_port(value, "web.http_port"))
        elif key == "dicom_host":
            dicom = dataclasses.replace(dicom, host=_check_host(value, "dicom.host", True))
        elif key == "web_host":
            web = dataclasses.replace(web, host=_check_host(value, "web.host", True))
        elif key == "log_level":
            level = _check_choice(str(value).upper(), "logging.level", LOG_LEVELS)
            top["logging"] = dataclasses.replace(config.logging, level=level)
        else:
            raise ConfigError(key, "is not a known override")
    return dataclasses.replace(config, dicom=dicom, web=web, **top)
