"""The real DEX files of tests/data/dex: each parses, with exactly the warnings its README
predicts and the values a person reading the file sees."""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path

import pytest

from fleetcore_protocol.dex import Audit, Counter, DexFile, DexWarning, Product, WarningCode, parse

CORPUS = Path(__file__).parent / "data" / "dex"
W = WarningCode


def _read(name: str) -> DexFile:
    return parse((CORPUS / name).read_bytes())


def _codes(warnings: tuple[DexWarning, ...]) -> list[str]:
    return sorted(str(w.code) for w in warnings)


def _only(dex: DexFile) -> Audit:
    assert len(dex.audits) == 1
    return dex.audits[0]


def _product(audit: Audit, selection: str) -> Product:
    return next(p for p in audit.products if p.selection == selection)


# file -> (file-level warning codes, the set's warning codes), with multiplicity.
EXPECTED = {
    "TMDroid__dex-parse__dex3.dex": ([], [W.SEGMENT_COUNT]),
    "TMDroid__dex-parse__test.dex": ([], [W.BAD_ELEMENT, W.LOOP_SEGMENTS]),
    "TMDroid__dex-parse__test2.dex": (
        [W.TEXT_BEFORE_DXS],
        [W.BAD_ELEMENT, W.CRC_MISSING, W.SEGMENT_COUNT],
    ),
    "mkrasselt1__php-evadts-parser__animo.eva_dts": ([], []),
    "mkrasselt1__php-evadts-parser__animo2.eva_dts": ([], [W.CRC_MISSING, W.TRUNCATED]),
    "mkrasselt1__php-evadts-parser__rhevendors.eva_dts": ([], [W.SEGMENT_COUNT]),
    "mkrasselt1__php-evadts-parser__sielaff.eva_dts": (
        [W.TEXT_BEFORE_DXS],
        [W.CRC_MISSING, W.TRUNCATED],
    ),
    "mkrasselt1__php-evadts-parser__test_unknown_blocks.eva": (
        [W.TRUNCATED],
        [W.BAD_ELEMENT, W.CRC_MISSING, W.SEGMENT_COUNT, W.UNKNOWN_SEGMENT, W.UNKNOWN_SEGMENT],
    ),
}


def test_every_corpus_file_is_covered() -> None:
    files = {p.name for p in CORPUS.iterdir() if p.name not in ("README.md", ".gitattributes")}
    assert files == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_file_warnings(name: str) -> None:
    dex = _read(name)
    file_codes, set_codes = EXPECTED[name]
    assert dex.is_dex
    assert _codes(dex.warnings) == sorted(file_codes)
    assert _codes(_only(dex).warnings) == sorted(set_codes)
    for warning in dex.all_warnings:
        assert "parser failed" not in warning.message


def test_dex3_crane() -> None:
    dex = _read("TMDroid__dex-parse__dex3.dex")
    audit = _only(dex)
    assert (dex.sender, dex.version, dex.line_ends) == ("CNV   DE32", "V1/1", "LF")
    assert audit.crc is not None
    assert (audit.crc.sent, audit.crc.matched) == ("91CA", "msb_first")
    assert (audit.declared_segment_count, audit.segment_count) == (1, 138)
    assert audit.machine.serial == "000000"
    assert audit.machine.model == "CRANE--EURO43208"
    assert audit.currency.decimal_places == 2  # no ID4: the default
    assert len(audit.products) == 60
    first = _product(audit, "111")
    assert first.price == Decimal("3.00")
    # PA2 with only the since-reset elements.
    assert first.paid.count_init is None
    assert first.paid.count_reset == 88
    assert first.paid.value_reset == Decimal("348.00")
    assert audit.machine_time == datetime(2018, 2, 1, 11, 56)
    doors = [e for e in audit.events if e.code == "EGS"]
    assert len(doors) == 4
    assert doors[0].at == datetime(2018, 2, 1, 10, 58)
    assert doors[0].duration_minutes == 10
    assert audit.read is not None
    assert audit.read.reads_with_reset_init == 0
    assert audit.cash.bills_in_reset == Decimal("90.50")  # Nc: 9050 whole units > cashbox
    assert not audit.cash.bills_whole_units


def test_test_dex_loops_and_crlf() -> None:
    dex = _read("TMDroid__dex-parse__test.dex")
    audit = _only(dex)
    assert dex.line_ends == "CRLF"
    assert audit.crc is not None
    assert (audit.crc.sent, audit.crc.matched) == ("E8BC", "msb_first")
    assert (audit.declared_segment_count, audit.segment_count) == (54, 54)
    assert audit.machine.serial is None  # empty ID1
    assert audit.events == ()  # empty EA1
    assert audit.currency.decimal_places == 0
    assert audit.currency.numeric_code == "039"
    assert len(audit.products) == 10
    assert audit.products[0].price == Decimal(500)
    assert audit.paid.value_init == Decimal(69250)
    raw_ids = [r.id for r in audit.raw_segments]
    assert raw_ids.count("LS") == 2
    assert raw_ids.count("LE") == 2
    assert raw_ids.count("MA5") == 9
    loop = next(w for w in audit.warnings if w.code is W.LOOP_SEGMENTS)
    assert loop.line == 22
    assert audit.read is not None
    assert audit.read.reads_with_reset_init == 23


def test_test2_preamble_ea2_in_groups_and_bills_quirk() -> None:
    dex = _read("TMDroid__dex-parse__test2.dex")
    audit = _only(dex)
    assert dex.warnings[0].line == 1
    assert audit.first_line == 13
    assert audit.crc is None
    assert (audit.declared_segment_count, audit.segment_count) == (54, 78)
    assert audit.machine.serial == "WTN11082110074"
    assert [p.selection for p in audit.products] == [f"0{n}" for n in range(10, 20)]
    assert [e.code for e in audit.events] == ["ELA"] * 5
    p012 = _product(audit, "012")
    assert p012.paid.count_init == 43
    assert p012.discounted.count_init == 0
    assert p012.surcharged.value_reset == Decimal("0.00")
    assert p012.test.value_init == Decimal("1.50")
    assert p012.free.count_reset == 2
    sold_out = _product(audit, "010").sold_out
    assert sold_out is not None
    assert sold_out.date == date(2012, 3, 1)
    assert sold_out.time == time(12, 53, 20)
    # PA1 after an EA2 starts the next group; the EA2 did not end one early.
    assert _product(audit, "013").free.count_init == 1
    # CA304 = 49 whole dollars, CA309 = 4900 cents: the North-American quirk.
    assert audit.cash.bills_whole_units
    assert audit.cash.bills_in_reset == Decimal("49.00")
    assert audit.cash.cash_in_reset == Decimal("196.10")
    assert [p.segment for p in audit.parts] == ["CB1", "CA1", "BA1"]


def test_animo_clean() -> None:
    dex = _read("mkrasselt1__php-evadts-parser__animo.eva_dts")
    audit = _only(dex)
    assert dex.all_warnings == ()
    assert dex.line_ends == "LF"
    assert audit.crc is not None
    assert (audit.crc.sent, audit.crc.matched) == ("B9AE", "msb_first")
    assert (audit.declared_segment_count, audit.segment_count) == (117, 117)
    assert audit.machine.serial == "ANIKraftver"
    assert (audit.currency.decimal_places, audit.currency.alpha_code) == (2, "EUR")
    assert audit.machine_time == datetime(2010, 1, 19, 23, 1, 11)
    assert len(audit.products) == 24
    coffee = _product(audit, "0")
    assert coffee.name == "COFFEE"
    assert coffee.price == Decimal("1.00")
    assert coffee.paid.count_init == 412
    assert coffee.paid.value_init == Decimal("412.00")
    assert coffee.paid.count_reset == 2655  # a 3-element PA2
    assert audit.reset_mode is None  # empty SD1
    assert {"SA2", "EA6", "TA2"} <= {r.id for r in audit.raw_segments}
    assert [p.segment for p in audit.parts] == ["AM1"]
    assert not audit.damaged


def test_animo2_truncated() -> None:
    audit = _only(_read("mkrasselt1__php-evadts-parser__animo2.eva_dts"))
    assert audit.damaged
    assert audit.crc is None
    assert audit.declared_segment_count is None
    assert len(audit.products) == 27
    assert audit.products[-1].name == "RISTRETTO SUGAR"
    assert audit.machine.serial == "ANIIMM 2WG3"


def test_rhevendors_full_file() -> None:
    dex = _read("mkrasselt1__php-evadts-parser__rhevendors.eva_dts")
    audit = _only(dex)
    assert audit.crc is not None
    assert (audit.crc.sent, audit.crc.matched) == ("F4D0", "msb_first")
    assert (audit.declared_segment_count, audit.segment_count) == (349, 369)
    assert audit.machine.serial == "RHV0000000000"
    assert audit.paid == Counter(Decimal("5865.30"), 9612, Decimal("5865.30"), 9592)
    assert audit.cashless1.value_init == Decimal("2742.00")
    assert len(audit.products) == 18
    first = audit.products[0]
    assert first.name == "KAFFEE SCHWARZ BOHNE"  # padded with blanks in the file
    assert len(first.by_payment) == 8
    cashless = first.by_payment[2]
    assert (cashless.device, cashless.price_list, cashless.price) == ("DA", "1", Decimal("0.50"))
    assert (cashless.counter.count_init, cashless.counter.value_init) == (182, Decimal("91.00"))
    assert first.mixed is not None
    assert first.mixed.count_init == 0
    odd = _product(audit, "18")  # PA1*18**USD
    assert odd.price is None
    assert odd.name == "USD"
    assert len(audit.price_lines) == 34
    line = audit.price_lines[1]
    assert (line.price_list, line.selection, line.price) == ("0", "2", Decimal("0.60"))
    assert (line.vends_reset, line.vends_init) == (1175, None)
    assert len(audit.events) == 42
    assert audit.events[0].code == "OCM mdb"
    assert audit.events[0].at == datetime(2023, 10, 22, 12, 53)
    assert audit.events[1].segment == "EA2"
    assert audit.events[1].active is False
    assert audit.read is not None
    assert audit.read.read_at == datetime(2023, 11, 27, 10, 11)
    assert audit.read.previous_read_at == datetime(2023, 10, 26, 13, 42)
    assert audit.read_time == datetime(2023, 11, 27, 10, 11)
    assert [p.segment for p in audit.parts] == ["CB1", "BA1", "CA1", "DA1", "DB1"]


def test_sielaff_mc5_before_dxs_and_ma5() -> None:
    dex = _read("mkrasselt1__php-evadts-parser__sielaff.eva_dts")
    audit = _only(dex)
    assert dex.version == "V1/1"
    assert dex.warnings[0].line == 1  # the MC5 line
    # ID4 comes after MA5 lines and still scales every amount.
    assert (audit.currency.decimal_places, audit.currency.alpha_code) == (2, "EUR")
    assert audit.paid.value_init == Decimal("2348.50")
    assert [r.elements[0] for r in audit.raw_segments if r.id == "MA5"] == [
        "DB",
        "KV",
        "VMI",
        "XLOC",
        "CA11",
    ]
    assert audit.machine_time == datetime(2023, 8, 21, 17, 53, 47)


def test_unknown_blocks_kept() -> None:
    dex = _read("mkrasselt1__php-evadts-parser__test_unknown_blocks.eva")
    audit = _only(dex)
    unknown = [r for r in audit.raw_segments if r.id in ("EA250705", "EADXS")]
    assert [r.line for r in unknown] == [10, 11]
    assert unknown[1].elements[0] == "9999999999"
    assert (audit.declared_segment_count, audit.segment_count) == (2, 11)
    assert dex.sender == "9999999999"  # EADXS* is not a second DXS
    bad = next(w for w in audit.warnings if w.code is W.BAD_ELEMENT)
    assert bad.segment == "VA1"
