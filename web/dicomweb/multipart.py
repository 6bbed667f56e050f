"""multipart/related bodies (RFC 2387, PS3.18 8.6.1.2): parsing a request held in a
buffer (bytes or mmap) and writing a response part by part. No I/O, no globals."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from werkzeug.http import parse_options_header

MAX_HEADER_BYTES = 8192  # the headers of one part


class MultipartError(ValueError):
    """A body that is not the multipart/related its Content-Type announces."""


@dataclass(frozen=True)
class Part:
    """One body part: its headers (names lower case) and where its content lies."""

    headers: dict[str, str]
    start: int
    end: int

    @property
    def content_type(self) -> str:
        return parse_options_header(self.headers.get("content-type", ""))[0].lower()


def content_type(header: str) -> tuple[str, dict[str, str]]:
    """The media type (lower case) and its parameters (names lower case)."""
    media, params = parse_options_header(header or "")
    return media.lower(), {k.lower(): v for k, v in params.items()}


def _headers(raw: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in raw.split(b"\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep or not name.strip() or name != name.strip():
            raise MultipartError(f"part header line {line[:40]!r} is not 'Name: value'")
        out[name.decode("latin-1").lower()] = value.strip().decode("latin-1")
    return out


def parse(buf: Any, boundary: str, max_parts: int = 10000) -> list[Part]:
    """The parts of a multipart body in ``buf`` (bytes or mmap), in order."""
    if not boundary or len(boundary) > 70:
        raise MultipartError("the boundary parameter is missing or longer than 70 characters")
    delim = b"--" + boundary.encode("latin-1")
    pos = buf.find(delim)
    if pos < 0 or (pos > 0 and buf[pos - 2 : pos] != b"\r\n"):
        raise MultipartError("the body does not start with the boundary")
    parts: list[Part] = []
    while True:
        pos += len(delim)
        if buf[pos : pos + 2] == b"--":
            return parts
        eol = buf.find(b"\r\n", pos, pos + 1024)
        if eol < 0 or buf[pos:eol].strip(b" \t"):
            raise MultipartError("a boundary line is not followed by CRLF")
        head_start = eol + 2
        if buf[head_start : head_start + 2] == b"\r\n":
            head_end, body = head_start, head_start + 2
        else:
            head_end = buf.find(b"\r\n\r\n", head_start, head_start + MAX_HEADER_BYTES)
            if head_end < 0:
                raise MultipartError("a part's headers do not end (or exceed 8 KB)")
            body = head_end + 4
        nxt = buf.find(b"\r\n" + delim, body)
        if nxt < 0:
            raise MultipartError("the closing boundary is missing")
        parts.append(Part(_headers(bytes(buf[head_start:head_end])), body, nxt))
        if len(parts) > max_parts:
            raise MultipartError(f"more than {max_parts} parts")
        pos = nxt + 2


def new_boundary() -> str:
    return "appliance-" + secrets.token_hex(16)


def write(boundary: str, parts: Iterable[tuple[str, Iterable[bytes]]]) -> Iterator[bytes]:
    """A multipart body: each part's Content-Type and content chunks, then the close."""
    for media_type, chunks in parts:
        yield f"--{boundary}\r\nContent-Type: {media_type}\r\n\r\n".encode("latin-1")
        yield from chunks
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("latin-1")
