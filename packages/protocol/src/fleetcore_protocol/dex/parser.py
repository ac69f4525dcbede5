"""`parse(data) -> DexFile`: a lenient DEX/EVA-DTS reader that never raises.

The file is walked once as a small state machine (before DXS, in the envelope, inside an
ST set, after DXE); each complete or cut-off set is then read by segments.AuditBuilder and
checked against its G85 (CRC) and SE (segment count, control number).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fleetcore_protocol.dex.lexer import (
    Segment,
    crc16_arc,
    has_bad_characters,
    split_lines,
    tokenize,
)
from fleetcore_protocol.dex.model import Audit, CrcCheck, DexFile, DexWarning, WarningCode
from fleetcore_protocol.dex.segments import LOOP_MARKERS, AuditBuilder
from fleetcore_protocol.dex.values import Fields, Warnings

W = WarningCode


@dataclass(slots=True)
class _Set:
    """The lines of one ST set as they are read."""

    start: int  # index of the ST line in the file's lines
    st: Segment
    segments: list[Segment] = field(default_factory=list)
    g85_index: int | None = None
    g85: Segment | None = None
    se: Segment | None = None


def parse(data: bytes) -> DexFile:
    """Read a DEX file; every problem becomes a warning, never an exception."""
    try:
        return _parse(data)
    except Exception as exc:  # a parser bug must not take an upload down; say so instead
        message = f"the parser failed ({type(exc).__name__}); the file was not read"
        return DexFile(audits=(), warnings=(DexWarning(W.NOT_DEX, message),), is_dex=False)


def _parse(data: bytes) -> DexFile:
    text = bytes(data).decode("latin-1")
    lines, line_ends = split_lines(text)
    warnings = Warnings()
    sets: list[_Set] = []
    current: _Set | None = None
    dxs: Segment | None = None
    dxe: Segment | None = None
    before: list[int] = []
    after: list[int] = []
    outside: list[Segment] = []

    check = has_bad_characters(text)
    for index, raw in enumerate(lines):
        segment = tokenize(raw, index + 1, check)
        if segment is None:
            continue
        sid = segment.id
        if dxe is not None:
            after.append(segment.line)
            continue
        if current is not None:
            if sid in ("ST", "DXE", "DXS"):
                current = None  # cut off: no SE; the new segment is read below
            else:
                if sid == "G85" and current.g85 is None:
                    current.g85, current.g85_index = segment, index
                elif sid == "SE":
                    current.se = segment
                    current = None
                else:
                    current.segments.append(segment)
                continue
        if sid == "ST":
            current = _Set(index, segment)
            sets.append(current)
        elif sid == "DXS" and dxs is None and not sets:
            dxs = segment
        elif sid == "DXE" and (dxs is not None or sets):
            dxe = segment
        elif dxs is None and not sets:
            before.append(segment.line)
        else:
            outside.append(segment)

    if dxs is None and not sets:
        message = "nothing in the input looks like a DEX audit (no DXS, no ST)"
        warnings.add(W.NOT_DEX, message)
        return DexFile((), warnings.result(), line_ends=line_ends, is_dex=False)

    if before:
        warnings.add(
            W.TEXT_BEFORE_DXS,
            f"{len(before)} line(s) before DXS ignored"
            if dxs
            else f"{len(before)} line(s) before ST ignored",
            before[0],
        )
    if dxs is None:
        warnings.add(W.MISSING_DXS, "no DXS envelope before the first ST", sets[0].st.line, "ST")
    if after:
        warnings.add(W.TEXT_AFTER_DXE, f"{len(after)} line(s) after DXE ignored", after[0])
    for segment in outside:
        warnings.add(
            W.OUTSIDE_SET,
            f"{segment.id[:20]} outside an ST..SE set ignored",
            segment.line,
            segment.id[:20],
        )
    if line_ends == "mixed":
        warnings.add(W.MIXED_LINE_ENDS, "lines end in more than one of CR, LF and CRLF")
    if len(sets) > 1:
        warnings.add(W.MULTIPLE_SETS, f"{len(sets)} ST sets in one file; each is an audit")

    audits = tuple(_audit(s, lines) for s in sets)
    cut = any(s.se is None for s in sets)
    if dxe is None:
        if not cut:  # a set without SE already says the file is cut off
            warnings.add(W.TRUNCATED, "the file ends without DXE")
    else:
        _check_dxe(dxe, dxs, len(sets), warnings)
    return DexFile(
        audits=audits,
        warnings=warnings.result(),
        sender=Fields(dxs, warnings).text(1) if dxs else None,
        version=Fields(dxs, warnings).text(3) if dxs else None,
        line_ends=line_ends,
    )


def _check_dxe(dxe: Segment, dxs: Segment | None, sets: int, warnings: Warnings) -> None:
    f = Fields(dxe, warnings)
    declared = f.text(2)
    if declared is None or not declared.isdigit() or int(declared) != sets:
        warnings.add(
            W.CONTROL_NUMBER,
            f"DXE02 says {declared!r} sets, the file has {sets}",
            dxe.line,
            "DXE",
        )
    sent = f.text(1)
    expected = Fields(dxs, warnings).text(4) if dxs else None
    if dxs is not None and not _same_number(sent, expected):
        warnings.add(
            W.CONTROL_NUMBER,
            f"DXE01 {sent!r} differs from DXS04 {expected!r}",
            dxe.line,
            "DXE",
        )


def _same_number(a: str | None, b: str | None) -> bool:
    if a is not None and b is not None and a.isdigit() and b.isdigit():
        return int(a) == int(b)
    return a == b


def _audit(s: _Set, lines: list[str]) -> Audit:
    warnings = Warnings()
    builder = AuditBuilder(warnings)
    control = Fields(s.st, warnings).text(2)
    loops = [seg for seg in s.segments if seg.id in LOOP_MARKERS]
    currency = next((seg for seg in s.segments if seg.id == "ID4"), None)
    if currency is not None:
        builder.read_currency(currency)
    for segment in (s.st, *s.segments, *(x for x in (s.g85, s.se) if x is not None)):
        _line_warnings(segment, warnings)
    for segment in s.segments:
        if segment is not currency:
            builder.add(segment)

    if loops:
        warnings.add(
            W.LOOP_SEGMENTS,
            f"{len(loops)} LS/LE loop marker(s) skipped and not counted",
            loops[0].line,
            loops[0].id,
        )
    counted = 1 + len(s.segments) - len(loops) + (s.g85 is not None) + (s.se is not None)
    declared = _check_se(s, control, counted, warnings)
    crc = _check_crc(s, lines, warnings)
    if s.se is None:
        last = s.segments[-1].line if s.segments else s.st.line
        warnings.add(W.TRUNCATED, "the set ends without SE: the file is cut off", last)
    items = sorted(warnings.result(), key=lambda w: (w.line is None, w.line or 0))
    return Audit(
        control_number=control,
        first_line=s.st.line,
        segment_count=counted,
        declared_segment_count=declared,
        crc=crc,
        warnings=tuple(items),
        **builder.result(),
    )


def _line_warnings(segment: Segment, warnings: Warnings) -> None:
    if segment.bad_characters:
        warnings.add(
            W.BAD_CHARACTER, "bytes outside 0x20-0x7E in the line", segment.line, segment.id[:20]
        )
    if segment.bad_escape:
        warnings.add(
            W.BAD_ESCAPE,
            "a ^ that is not a ^HH^ escape, kept as written",
            segment.line,
            segment.id[:20],
        )
    if segment.cut:
        warnings.add(
            W.BAD_ELEMENT,
            "too many elements; the rest of the line ignored",
            segment.line,
            segment.id[:20],
        )


def _check_se(s: _Set, control: str | None, counted: int, warnings: Warnings) -> int | None:
    if s.se is None:
        return None
    f = Fields(s.se, warnings)
    declared = f.count(1)
    if declared != counted:
        warnings.add(
            W.SEGMENT_COUNT,
            f"SE01 says {declared} segments, the set has {counted} (ST..SE, loop markers excluded)",
            s.se.line,
            "SE",
        )
    if not _same_number(f.text(2), control):
        warnings.add(
            W.CONTROL_NUMBER,
            f"SE02 {f.text(2)!r} differs from ST02 {control!r}",
            s.se.line,
            "SE",
        )
    return declared


def _check_crc(s: _Set, lines: list[str], warnings: Warnings) -> CrcCheck | None:
    end = s.g85_index if s.g85_index is not None else len(lines)
    if s.g85 is None:
        if s.se is not None:
            warnings.add(
                W.CRC_MISSING, "no G85: the set's integrity cannot be checked", s.se.line, "SE"
            )
        else:
            warnings.add(
                W.CRC_MISSING, "no G85: the set's integrity cannot be checked", s.st.line, "ST"
            )
        return None
    first = lines[s.start]
    covered = [first[first.find("ST") :], *lines[s.start + 1 : end]]
    # The CRC covers the lines re-joined by CRLF, whatever ends the file uses.
    computed = crc16_arc("".join(line + "\r\n" for line in covered).encode("latin-1"))
    msb = f"{computed:04X}"
    lsb = f"{computed & 0xFF:02X}{computed >> 8:02X}"
    sent = Fields(s.g85, warnings).text(1)
    value = (sent or "").upper()
    matched = "msb_first" if value == msb else "lsb_first" if value == lsb else None
    if matched is None:
        warnings.add(
            W.CRC_MISMATCH,
            f"G85 {sent!r} matches neither {msb} nor {lsb}: the data may be altered",
            s.g85.line,
            "G85",
        )
    return CrcCheck(sent=sent, computed=msb, matched=matched)
