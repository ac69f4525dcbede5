"""Properties of the DEX parser and writer (hypothesis, FLEETCORE_FUZZ_PROFILE sets the depth).

Any bytes give a DexFile and never an exception; what the writer writes parses back to
the same values with no warning and a matching CRC; and a written file cut short, with a
byte flipped or a line dropped is always reported, never silently accepted.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from hypothesis import example, given
from hypothesis import strategies as st

from fleetcore_protocol.dex import Counter, DexFile, SoldOut, WarningCode, parse
from fleetcore_protocol.dex.writer import MachineAudit, Selection, total, write
from tests.support.hypothesis_profiles import fuzz

# Printable Latin-1 text with no blanks at its ends (the parser strips those) and no NUL
# (the parser replaces it): everything else, `*`, `^` and control bytes included, is
# escaped by the writer and must come back.
_TEXT = st.text(st.characters(min_codepoint=1, max_codepoint=0xFF), min_size=1, max_size=12).filter(
    lambda t: t.strip() == t
)
_COUNT = st.integers(0, 10**7)


def _assert_parsed(result: DexFile) -> None:
    assert isinstance(result, DexFile)
    for warning in result.all_warnings:
        assert "parser failed" not in warning.message, warning


# Every strategy is built once, here: built inside a draw, each one is made and validated
# again at every example (most of these tests' time).
_MAYBE_COUNT = st.none() | _COUNT
_MAYBE_TEXT = st.none() | _TEXT
_MAYBE_UP_TO_999 = st.none() | st.integers(0, 999)
_CODES = st.lists(_TEXT.map(lambda t: t[:6].strip() or "1"), max_size=6, unique=True)
_SOLD_OUT = st.none() | st.builds(
    SoldOut,
    st.none() | st.dates(),
    st.none() | st.times().map(lambda t: t.replace(microsecond=0)),
    _MAYBE_COUNT,
)
_READ_AT = st.none() | st.datetimes(datetime(1970, 1, 1), datetime(2099, 12, 31)).map(
    lambda t: t.replace(microsecond=0)
)
_CURRENCIES = st.sampled_from([None, "EUR", "USD", "CHF", "XAF"])
_RESET_MODES = st.sampled_from([None, "AUTO", "SAVE", "RESET"])


def _counters(places: int) -> st.SearchStrategy[Counter]:
    money = st.none() | _COUNT.map(lambda n: Decimal(n).scaleb(-places))
    return st.builds(Counter, money, _MAYBE_COUNT, money, _MAYBE_COUNT)


# decimal places -> (counters, counters or None)
_COUNTERS = {places: _counters(places) for places in range(5)}
_MAYBE_COUNTERS = {places: st.none() | counters for places, counters in _COUNTERS.items()}


@st.composite
def _audits(draw: st.DrawFn) -> MachineAudit:
    places = draw(st.integers(0, 4))
    codes = draw(_CODES)
    counters, maybe_counters = _COUNTERS[places], _MAYBE_COUNTERS[places]
    selections = [
        Selection(
            selection=code,
            price=Decimal(draw(_COUNT)).scaleb(-places),
            paid=draw(counters),
            name=draw(_MAYBE_TEXT),
            capacity=draw(_MAYBE_UP_TO_999),
            par_level=draw(_MAYBE_UP_TO_999),
            test=draw(maybe_counters),
            free=draw(maybe_counters),
            sold_out=draw(_SOLD_OUT),
            cash=draw(maybe_counters),
            cashless=draw(maybe_counters),
        )
        for code in codes
    ]
    return MachineAudit(
        serial=draw(_TEXT),
        model=draw(_MAYBE_TEXT),
        decimal_places=places,
        currency=draw(_CURRENCIES),
        selections=selections,
        read_at=draw(_READ_AT),
        reads=draw(_MAYBE_COUNT),
        reset_mode=draw(_RESET_MODES),
    )


_FILES = st.tuples(
    st.lists(_audits(), min_size=1, max_size=3),
    st.sampled_from(["\r\n", "\n"]),
    st.sampled_from(["msb_first", "lsb_first"]),
)


@fuzz()
@given(st.binary(max_size=4096))
@example(b"")
@example(b"DXS*\nST\nSE\nDXE")
@example(b"ST*001*0001\r\nG85*\r\nSE*\r\n")
def test_any_bytes_give_a_dexfile(data: bytes) -> None:
    _assert_parsed(parse(data))


_LINES = st.sampled_from(
    [
        "DXS*X*VA*V0/6*1",
        "ST*001*0001",
        "G85*0000",
        "SE*5*0001",
        "DXE*1*1",
        "LS*01",
        "LE*01",
        "ID4*3*1840",
        "PA1*1*100",
        "PA2*1*2*3*4*5",
        "PA7*1*CA*0*1",
        "EA1*X*9913*2561",
        "CA3*1*2*3*4*5*6*7*8*9*10",
        "SD1*****AUTO",
        "^2A^^ZZ",
        "",
    ]
)


@fuzz()
@given(st.lists(_LINES | st.text(max_size=30), max_size=40), st.sampled_from(["\r\n", "\n", "\r"]))
def test_dex_like_lines_give_a_dexfile(lines: list[str], eol: str) -> None:
    result = parse(eol.join(lines).encode("utf-8", "surrogatepass"))
    _assert_parsed(result)
    assert result.is_dex or result.audits == ()


@fuzz(scale=0.3)
@given(_FILES)
def test_written_audits_parse_back(case: tuple[list[MachineAudit], str, str]) -> None:
    audits, eol, order = case
    result = parse(write(audits, line_end=eol, crc_order=order))  # type: ignore[arg-type]
    expected_file = [WarningCode.MULTIPLE_SETS] if len(audits) > 1 else []
    assert [w.code for w in result.warnings] == expected_file
    assert result.line_ends == ("CRLF" if eol == "\r\n" else "LF")
    assert len(result.audits) == len(audits)
    for written, read in zip(audits, result.audits, strict=True):
        assert read.warnings == ()
        assert read.crc is not None
        sent = read.crc.sent or ""
        assert read.crc.matched == ("msb_first" if sent[:2] == sent[2:] else order)
        assert read.machine.serial == written.serial
        assert read.machine.model == written.model
        assert read.currency.decimal_places == written.decimal_places
        assert read.currency.alpha_code == written.currency
        assert read.paid == total(s.paid for s in written.selections)
        assert read.cash_sales == total(s.cash for s in written.selections)
        assert read.machine_time == written.read_at
        assert read.read_time == written.read_at
        assert read.reset_mode == written.reset_mode
        assert len(read.products) == len(written.selections)
        for s, p in zip(written.selections, read.products, strict=True):
            assert (p.selection, p.price, p.name) == (s.selection, s.price, s.name)
            assert (p.capacity, p.par_level) == (s.capacity, s.par_level)
            assert p.paid == s.paid
            assert p.test == (s.test or Counter())
            assert p.free == (s.free or Counter())
            assert p.sold_out == s.sold_out
            payments = [("CA", s.cash), ("DA", s.cashless)]
            assert [(b.device, b.price, b.counter) for b in p.by_payment] == [
                (device, s.price, c) for device, c in payments if c is not None
            ]


@st.composite
def _written(draw: st.DrawFn) -> bytes:
    audits, eol, order = draw(_FILES)
    return write(audits, line_end=eol, crc_order=order)  # type: ignore[arg-type]


@fuzz(scale=0.3)
@given(_written(), st.data())
def test_a_truncated_file_is_reported(data: bytes, pick: st.DataObject) -> None:
    # Cutting only the final line end loses nothing; any cut into the text must be seen.
    cut = pick.draw(st.integers(0, len(data.rstrip()) - 1))
    result = parse(data[:cut])
    _assert_parsed(result)
    assert result.all_warnings != ()


@fuzz(scale=0.3)
@given(_written(), st.data())
def test_a_flipped_byte_in_a_set_is_reported(data: bytes, pick: st.DataObject) -> None:
    # Inside the bytes the CRC covers, every single-byte change must be reported.
    start, end = data.index(b"ST*"), data.index(b"G85*")
    position = pick.draw(st.integers(start, end - 1))
    mask = pick.draw(st.integers(1, 255))
    mutated = bytearray(data)
    mutated[position] ^= mask
    result = parse(bytes(mutated))
    _assert_parsed(result)
    codes = {w.code for w in result.all_warnings}
    assert codes - {WarningCode.MULTIPLE_SETS}, codes


@fuzz(scale=0.3)
@given(_written(), st.data())
def test_a_dropped_line_is_reported(data: bytes, pick: st.DataObject) -> None:
    eol = b"\r\n" if b"\r\n" in data else b"\n"
    lines = data.split(eol)[:-1]
    dropped = pick.draw(st.integers(0, len(lines) - 1))
    mutated = eol.join(lines[:dropped] + lines[dropped + 1 :]) + eol
    result = parse(mutated)
    _assert_parsed(result)
    codes = {w.code for w in result.all_warnings}
    assert codes - {WarningCode.MULTIPLE_SETS}, (lines[dropped], codes)
