"""DEX text into lines and segments: line ends, `*` elements, ^HH^ escapes, CRC-16/ARC.

Bytes are read as Latin-1, so every byte maps to one character and nothing can fail to
decode; the CRC is computed over the same characters encoded back to Latin-1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A line with more elements than any EVA-DTS block has is cut here, so a pathological line
# of a million `*` costs one bounded split instead of a million-element tuple.
MAX_ELEMENTS = 64

_EOL = re.compile(r"\r\n|\r|\n")
_ESCAPE = re.compile(r"\^([0-9A-Fa-f]{2})\^")
_BAD_CHAR = re.compile(r"[^\x20-\x7e]")
_BAD_CHAR_OR_EOL = re.compile(r"[^\x20-\x7e\r\n]")


@dataclass(slots=True)  # not frozen: one is built per line, and frozen __init__ is slower
class Segment:
    """One non-blank line: its 1-based number, id and decoded elements (id excluded)."""

    line: int
    id: str
    elements: tuple[str, ...]
    bad_characters: bool = False  # bytes outside 0x20-0x7E in the line
    bad_escape: bool = False  # a `^` that is not part of a ^HH^ escape
    cut: bool = False  # more than MAX_ELEMENTS elements; the rest ignored


def split_lines(text: str) -> tuple[list[str], str | None]:
    """The lines of `text` without their ends, and which ends it uses (CRLF/LF/CR/mixed)."""
    crlf = text.count("\r\n")
    cr = text.count("\r") - crlf
    lf = text.count("\n") - crlf
    kinds = [
        (name, sep)
        for name, sep, n in (("CRLF", "\r\n", crlf), ("LF", "\n", lf), ("CR", "\r", cr))
        if n
    ]
    if not kinds:
        lines = [text] if text else []
        return lines, None
    lines = text.split(kinds[0][1]) if len(kinds) == 1 else _EOL.split(text)
    if lines and lines[-1] == "":
        lines.pop()  # the final line end, not an empty last line
    return lines, kinds[0][0] if len(kinds) == 1 else "mixed"


def _unescape(element: str) -> tuple[str, bool]:
    decoded = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), element)
    # A `^` left over after decoding is an escape written wrongly; a decoded ^5E^ is not.
    bad = "^" in _ESCAPE.sub("", element)
    return decoded, bad


def has_bad_characters(text: str) -> bool:
    """Whether any character other than CR and LF lies outside 0x20-0x7E."""
    return _BAD_CHAR_OR_EOL.search(text) is not None


def tokenize(raw: str, number: int, check: bool = True) -> Segment | None:
    """A line as a segment; None for a blank line. `check=False` skips the character check
    when the whole text is known to be clean (one regex pass instead of one per line)."""
    if not raw.strip():
        return None
    bad_chars = check and _BAD_CHAR.search(raw) is not None
    parts = raw.split("*", MAX_ELEMENTS + 1)
    cut = len(parts) > MAX_ELEMENTS + 1
    if cut:
        parts.pop()
    bad_escape = False
    if "^" in raw:
        decoded = []
        for part in parts[1:]:
            if "^" in part:
                part, bad = _unescape(part)
                bad_escape = bad_escape or bad
            decoded.append(part)
        elements = tuple(decoded)
    else:
        elements = tuple(parts[1:])
    if bad_chars or "\x00" in "".join(elements):
        # NUL is the one character neither database stores in text.
        elements = tuple(e.replace("\x00", "\ufffd") for e in elements)
    return Segment(number, parts[0].strip().upper(), elements, bad_chars, bad_escape, cut)


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _crc_table()


def crc16_arc(data: bytes) -> int:
    """CRC-16/ARC: reflected polynomial 0xA001, initial value 0, no final XOR."""
    crc = 0
    table = _TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def escape(text: str) -> str:
    """Text as an AN element: `*`, `^` and bytes outside 0x20-0x7E written as ^HH^."""
    out = []
    for char in text:
        code = ord(char)
        if code > 0xFF:
            raise ValueError(f"{char!r} is not a Latin-1 character; DEX carries single bytes")
        if char in "*^" or not 0x20 <= code <= 0x7E:
            out.append(f"^{code:02X}^")
        else:
            out.append(char)
    return "".join(out)
