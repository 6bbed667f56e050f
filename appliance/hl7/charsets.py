"""MSH-18 character sets: which codec decodes a message's bytes (HL7 v2.5.1 2.15.9.18, Table 0211).

Pure. A message is decoded as a whole before it is parsed: in ISO-2022-JP and Shift_JIS the
second byte of a kanji may be ``|``, ``^``, ``~`` or ``\\``, so splitting the bytes into
fields first would cut names apart. MSH-18 itself is read from the MSH segment decoded as
Latin-1 (one character per byte), which keeps every delimiter where it is.
"""

from __future__ import annotations

import re

import hl7

from appliance.errors import ApplianceError

# Table 0211 values (and the spellings Japanese systems use for Shift_JIS) -> Python codec.
CODECS = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "8859/1": "latin-1",
    "8859/2": "iso8859_2",
    "8859/5": "iso8859_5",
    "8859/7": "iso8859_7",
    "8859/9": "iso8859_9",
    "8859/15": "iso8859_15",
    "UNICODE": "utf-8",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "UNICODE UTF-16": "utf-16",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc_kr",
    "BIG-5": "big5",
    "SHIFT_JIS": "shift_jis",
    "SHIFT-JIS": "shift_jis",
    "SJIS": "shift_jis",
    "MS932": "cp932",
    "CP932": "cp932",
    "WINDOWS-31J": "cp932",
}
# ISO 2022 code extension (HL7 2.15.9.18: the first repetition is the default set, the
# others are switched to by escape sequences): the Japanese sets of JAHIS messages.
ISO2022_JP = {"ISO IR87", "ISO IR159", "ISO IR13", "ISO IR14"}
_NEWLINES = re.compile(r"\r\n|\n")


class CharsetError(ApplianceError):
    """The message's bytes cannot be decoded as MSH-18 (or the default) says."""

    def __init__(self, charset: str, reason: str) -> None:
        super().__init__(f"MSH-18 {charset!r}: {reason}")
        self.charset = charset
        self.reason = reason


def header(raw: bytes) -> hl7.Message:
    """The MSH segment alone, decoded byte for byte (Latin-1): for MSH-18 and for an ACK's
    addresses when the rest cannot be read. Raises ``hl7.ParseException`` or IndexError."""
    first = re.split(rb"[\r\n]", raw.lstrip(), maxsplit=1)[0]
    return hl7.parse(first.decode("latin-1"))


def declared(msh: hl7.Message) -> list[str]:
    """The repetitions of MSH-18, upper-cased, e.g. ``['', 'ISO IR87']``."""
    seg = msh.segment("MSH")
    if len(seg) <= 18:
        return []
    return [str(rep).strip().upper() for rep in seg(18)]


def codec_for(charsets: list[str], default: str) -> str:
    """The Python codec for MSH-18's repetitions (empty: the configured default)."""
    names = [c for c in charsets if c]
    if any(c in ISO2022_JP for c in names):
        if "ISO IR159" in names:
            return "iso2022_jp_1"
        return "iso2022_jp_ext" if "ISO IR13" in names else "iso2022_jp"
    name = (charsets[0] if charsets and charsets[0] else default).upper()
    if name not in CODECS:
        raise CharsetError(name, "is not a character set this appliance reads")
    return CODECS[name]


def decode(raw: bytes, default: str) -> str:
    """The message as text, segments ending in CR (senders ending them in LF are common)."""
    charsets = declared(header(raw))
    codec = codec_for(charsets, default)
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as exc:
        if codec != "shift_jis":
            raise CharsetError(charsets[0] if charsets else default, str(exc)) from exc
        try:  # Windows' Shift_JIS (NEC and IBM extensions) is what most Japanese RIS write
            text = raw.decode("cp932")
        except UnicodeDecodeError as exc2:
            raise CharsetError(charsets[0], str(exc2)) from exc2
    return _NEWLINES.sub("\r", text)


def encoder(charsets: list[str], default: str) -> str:
    """The codec an answer is written in: the sender's own (ACK MSH-18 repeats it)."""
    try:
        return codec_for(charsets, default)
    except CharsetError:
        return "ascii"
