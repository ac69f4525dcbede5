"""The DEX parser feature by feature, on small hand-written files."""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal

import pytest

from fleetcore_protocol.dex import Audit, DexFile, WarningCode, parse
from fleetcore_protocol.dex.lexer import crc16_arc

W = WarningCode
DXS = "DXS*TST0000001*VA*V0/6*1"


def st_set(
    *body: str, control: str = "0001", order: str = "msb", se: str | None = None
) -> list[str]:
    """One ST..SE set around `body` with a correct G85 (in `order`) and SE, unless `se`."""
    lines = [f"ST*001*{control}", *body]
    crc = crc16_arc("".join(line + "\r\n" for line in lines).encode("latin-1"))
    g85 = f"{crc:04X}" if order == "msb" else f"{crc & 0xFF:02X}{crc >> 8:02X}"
    counted = sum(1 for line in lines if line.split("*")[0] not in ("LS", "LE")) + 2
    return [*lines, f"G85*{g85}", f"SE*{counted if se is None else se}*{control}"]


def dex(*body: str, eol: str = "\r\n", **kwargs: str) -> bytes:
    """A whole file with one set."""
    lines = [DXS, *st_set(*body, **kwargs), "DXE*1*1"]
    return (eol.join(lines) + eol).encode("latin-1")


def one(data: bytes) -> Audit:
    result = parse(data)
    assert result.is_dex
    assert len(result.audits) == 1
    return result.audits[0]


def codes(result: DexFile) -> list[WarningCode]:
    return sorted(w.code for w in result.all_warnings)


def test_crc16_arc_check_value() -> None:
    # The catalogue check value of CRC-16/ARC over "123456789".
    assert crc16_arc(b"123456789") == 0xBB3D


@pytest.mark.parametrize("order", ["msb", "lsb"])
def test_crc_in_both_byte_orders(order: str) -> None:
    audit = one(dex("ID1*ABC123", order=order))
    assert audit.crc is not None
    assert audit.crc.matched == f"{order}_first"
    assert audit.warnings == ()


def test_crc_mismatch_is_damaging() -> None:
    data = dex("ID1*ABC123", "VA1*100*1*100*1").replace(b"VA1*100", b"VA1*900")
    result = parse(data)
    assert codes(result) == [W.CRC_MISMATCH]
    audit = result.audits[0]
    assert audit.damaged
    assert audit.crc is not None
    assert audit.crc.matched is None
    assert audit.paid.value_init == Decimal("9.00")  # still read: a person decides


def test_missing_g85() -> None:
    data = f"{DXS}\r\nST*001*0001\r\nID1*A\r\nSE*3*0001\r\nDXE*1*1\r\n".encode()
    result = parse(data)
    assert codes(result) == [W.CRC_MISSING]
    assert result.audits[0].crc is None
    assert not result.audits[0].damaged


def test_escapes_decoded_and_bad_ones_kept() -> None:
    audit = one(dex("PA1*A^2A^1*100*Caf^E9^ ^5E^ ^2A^ mix"))
    assert audit.products[0].selection == "A*1"
    assert audit.products[0].name == "Café ^ * mix"
    bad = parse(dex("PA1*1*100*50^ZZ^ off"))
    assert codes(bad) == [W.BAD_ESCAPE]
    assert bad.audits[0].products[0].name == "50^ZZ^ off"


def test_several_st_sets() -> None:
    lines = [DXS, *st_set("ID1*M1", control="0001"), *st_set("ID1*M2", control="0002"), "DXE*1*2"]
    result = parse("\n".join(lines).encode())
    assert [a.machine.serial for a in result.audits] == ["M1", "M2"]
    assert [a.control_number for a in result.audits] == ["0001", "0002"]
    assert [a.first_line for a in result.audits] == [2, 6]
    assert codes(result) == [W.MULTIPLE_SETS]
    wrong = "\n".join([*lines[:-1], "DXE*1*1"]).encode()
    assert codes(parse(wrong)) == [W.CONTROL_NUMBER, W.MULTIPLE_SETS]


def test_se_count_and_control_number() -> None:
    audit = one(dex("ID1*A", "VA1*1*1*1*1", se="3"))
    assert (audit.declared_segment_count, audit.segment_count) == (3, 5)
    assert [w.code for w in audit.warnings] == [W.SEGMENT_COUNT]
    lines = st_set("ID1*A")
    lines[-1] = lines[-1].replace("*0001", "*0002")
    result = parse("\r\n".join([DXS, *lines, "DXE*1*1"]).encode())
    assert codes(result) == [W.CONTROL_NUMBER]


def test_loop_segments_are_not_counted() -> None:
    audit = one(dex("LS*0100", "PA1*1*100", "PA2*1*100*1*100", "LE*0100"))
    assert audit.segment_count == 5  # ST, PA1, PA2, G85, SE
    assert audit.declared_segment_count == 5
    assert [w.code for w in audit.warnings] == [W.LOOP_SEGMENTS]
    assert [r.id for r in audit.raw_segments] == ["LS", "LE"]
    assert audit.products[0].paid.count_init == 1


@pytest.mark.parametrize(("eol", "name"), [("\r\n", "CRLF"), ("\n", "LF"), ("\r", "CR")])
def test_line_ends(eol: str, name: str) -> None:
    result = parse(dex("ID1*A", eol=eol))
    assert result.line_ends == name
    assert result.all_warnings == ()
    assert result.audits[0].crc is not None
    assert result.audits[0].crc.matched == "msb_first"


def test_mixed_line_ends() -> None:
    data = dex("ID1*A", "VA1*1*1*1*1").replace(b"\r\nVA1", b"\nVA1")
    result = parse(data)
    assert result.line_ends == "mixed"
    assert codes(result) == [W.MIXED_LINE_ENDS]
    assert result.audits[0].crc is not None
    assert result.audits[0].crc.matched == "msb_first"  # lines re-joined by CRLF


@pytest.mark.parametrize(
    ("id4", "places", "price"),
    [
        ("ID4*0*1348*HUF", 0, Decimal(150)),
        ("ID4*2*1978*EUR", 2, Decimal("1.50")),
        ("ID4*3*1124", 3, Decimal("0.150")),
        (None, 2, Decimal("1.50")),
    ],
)
def test_decimal_places(id4: str | None, places: int, price: Decimal) -> None:
    body = [line for line in (id4, "VA1*150*1", "PA1*1*150") if line is not None]
    audit = one(dex(*body))
    assert audit.warnings == ()
    assert audit.currency.decimal_places == places
    assert audit.paid.value_init == price
    assert audit.products[0].price == price
    assert str(audit.products[0].price) == str(price)


def test_currency_codes() -> None:
    assert one(dex("ID4*2*1840")).currency.alpha_code == "USD"
    assert one(dex("ID4*2*1978*EUR")).currency.numeric_code == "1978"
    assert one(dex("ID4*2*0001")).currency.alpha_code is None  # a telephone code
    bad = one(dex("ID4*9*1978*EU1", "VA1*150*1"))
    assert [w.code for w in bad.warnings] == [W.BAD_ELEMENT, W.BAD_ELEMENT]
    assert bad.currency.decimal_places == 2
    assert bad.currency.alpha_code == "EUR"  # derived from ID402 instead


def test_id4_after_money_still_applies() -> None:
    audit = one(dex("VA1*150*1", "ID4*1"))
    assert audit.paid.value_init == Decimal("15.0")


@pytest.mark.parametrize(
    ("ca3", "whole", "bills"),
    [
        ("CA3*19610*5650*9060*49*****4900", True, Decimal("49.00")),  # CA309 in Nc
        ("CA3*19610*5650*9060*49", True, Decimal("49.00")),  # cash in - coins = 4900
        ("CA3*19610*5650*9060*4900", False, Decimal("49.00")),  # the standard's Nc
        ("CA3**119045**9050", False, Decimal("90.50")),  # nothing to compare: Nc
        ("CA3*10000*5000*4000*1000*****1000", False, Decimal("10.00")),
    ],
)
def test_ca304_whole_units_quirk(ca3: str, whole: bool, bills: Decimal) -> None:
    audit = one(dex(ca3))
    assert audit.cash.bills_whole_units is whole
    assert audit.cash.bills_in_reset == bills


def test_ca3_ca4_with_no_decimals() -> None:
    audit = one(dex("ID4*0", "CA3*196*56*90*49", "CA4*40*12*41*13"))
    assert not audit.cash.bills_whole_units
    assert audit.cash.bills_in_reset == Decimal(49)
    assert (audit.cash.dispensed_reset, audit.cash.manually_dispensed_init) == (40, 13)


def test_pa_group_with_payment_devices() -> None:
    audit = one(
        dex(
            "PA1*12*150*COLA 33CL  *10*8**0*5*2",
            "PA2*10*1500*4*600*1*100*1*100*2*320*0*0",
            "PA3*1*150*1*150",
            "PA4*2*0*1*0",
            "PA5*260301*1015*3",
            "PA7*12*CA*0*150*6*900*3*450",
            "PA7*12*DA*0*150*4*600*1*150",
            "PA8*1*50*0*0",
        )
    )
    assert audit.warnings == ()
    product = audit.products[0]
    assert (product.selection, product.name, product.price) == ("12", "COLA 33CL", Decimal("1.50"))
    assert (product.capacity, product.par_level, product.current_level) == (10, 8, 5)
    assert product.refill_level == 2
    assert product.paid.value_reset == Decimal("6.00")
    assert product.discounted.count_init == 1
    assert product.surcharged.value_init == Decimal("3.20")
    assert product.test.count_reset == 1
    assert product.free.count_init == 2
    assert product.sold_out is not None
    assert product.sold_out.date == date(2026, 3, 1)
    assert product.sold_out.selected_while_sold_out == 3
    assert [(b.device, b.counter.count_init) for b in product.by_payment] == [("CA", 6), ("DA", 4)]
    assert product.by_payment[1].counter.value_reset == Decimal("1.50")
    assert product.mixed is not None
    assert product.mixed.value_init == Decimal("0.50")


def test_orphan_segments() -> None:
    result = parse(
        dex("PA2*1*100*1*100", "PA1*1*100", "PA7*2*CA*0*100*1*100*1*100", "VA1*1*1", "PA3*1*1")
    )
    assert codes(result) == [W.ORPHAN_SEGMENT] * 3
    assert result.audits[0].products[0].by_payment == ()
    assert result.audits[0].products[0].test.count_init is None


def test_events_inside_a_pa_group_do_not_end_it() -> None:
    audit = one(dex("PA1*1*100", "PA2*1*100*1*100", "EA2*ELA*1*4**1*30", "PA3*2*200*2*200"))
    assert audit.warnings == ()
    assert audit.products[0].test.count_init == 2
    event = audit.events[0]
    assert (event.segment, event.code, event.count_reset, event.count_init) == ("EA2", "ELA", 1, 4)
    assert event.active is True


def test_ea1_ea3_and_reset_mode() -> None:
    audit = one(
        dex(
            "ID5*260301*0815",
            "EA1*EGS*260228*2359*12",
            "EA1*EJJ*20260301*101530",
            "EA3*17*260301*0900*HH01*260201*083015*HH02**40*16",
            "SD1*****save",
        )
    )
    assert audit.warnings == ()
    door, fridge = audit.events
    assert (door.code, door.at, door.duration_minutes) == ("EGS", datetime(2026, 2, 28, 23, 59), 12)
    assert fridge.at == datetime(2026, 3, 1, 10, 15, 30)
    assert audit.read is not None
    assert audit.read.reads_with_reset_init == 17
    assert audit.read.read_at == datetime(2026, 3, 1, 9, 0)
    assert audit.read.terminal == "HH01"
    assert audit.read.previous_read_at == datetime(2026, 2, 1, 8, 30, 15)
    assert (audit.read.previous_terminal, audit.read.reads_init, audit.read.resets_init) == (
        "HH02",
        40,
        16,
    )
    assert audit.read_time == datetime(2026, 3, 1, 9, 0)
    assert audit.machine_time == datetime(2026, 3, 1, 8, 15)
    assert audit.reset_mode == "SAVE"


def test_bad_reset_mode() -> None:
    audit = one(dex("SD1*****SOMETIMES"))
    assert audit.reset_mode is None
    assert [w.code for w in audit.warnings] == [W.BAD_ELEMENT]


def test_bad_elements_become_none_with_a_warning() -> None:
    audit = one(dex("VA1*12O*3*x*4", "PA1*1*1.50*NAME*ten"))
    assert audit.paid.value_init is None
    assert audit.paid.count_init == 3
    assert audit.paid.value_reset is None
    assert audit.products[0].price is None
    assert audit.products[0].capacity is None
    bad = [w for w in audit.warnings if w.code is W.BAD_ELEMENT]
    assert [(w.line, w.segment) for w in bad] == [(3, "VA1"), (3, "VA1"), (4, "PA1"), (4, "PA1")]
    assert "VA101" in bad[0].message


@pytest.mark.parametrize(
    ("day", "clock", "expected"),
    [
        ("260301", "0815", datetime(2026, 3, 1, 8, 15)),
        ("20260301", "081530", datetime(2026, 3, 1, 8, 15, 30)),
        ("01-03-2026", "08:15:30", datetime(2026, 3, 1, 8, 15, 30)),
        ("991231", "2359", datetime(1999, 12, 31, 23, 59)),
        ("260301", "", datetime(2026, 3, 1)),
    ],
)
def test_dates_and_times(day: str, clock: str, expected: datetime) -> None:
    audit = one(dex(f"EA1*EGS*{day}*{clock}"))
    assert audit.warnings == ()
    assert audit.events[0].at == expected


@pytest.mark.parametrize(
    ("day", "clock"), [("261301", "0815"), ("260301", "2460"), ("2026031", "0815")]
)
def test_invalid_dates_and_times(day: str, clock: str) -> None:
    audit = one(dex(f"ID5*{day}*{clock}"))
    assert [w.code for w in audit.warnings] == [W.BAD_ELEMENT]
    assert audit.machine_time is None or audit.machine_time.time() == time(0, 0)


def test_zero_date_means_never() -> None:
    audit = one(dex("PA1*1*100", "PA5*000000*0000*0"))
    assert audit.warnings == ()
    assert audit.products[0].sold_out is not None
    assert audit.products[0].sold_out.date is None


def test_bytes_outside_printable_ascii() -> None:
    data = dex("ID1*AB\x00C\x07", "PA1*1*100*Caf\xe9")
    audit = one(data)
    assert [(w.code, w.line) for w in audit.warnings] == [
        (W.BAD_CHARACTER, 3),
        (W.BAD_CHARACTER, 4),
    ]
    assert audit.machine.serial == "AB\ufffdC\x07"  # NUL replaced: no database stores it
    assert audit.products[0].name == "Café"


@pytest.mark.parametrize("data", [b"", b"hello\nworld\n", b"\x00" * 1000, b"EADXS*1\nXST*1\n"])
def test_not_dex(data: bytes) -> None:
    result = parse(data)
    assert not result.is_dex
    assert result.audits == ()
    assert codes(result) == [W.NOT_DEX]


def test_text_around_the_envelope() -> None:
    data = b"MC5*Vendor*EvaData\r\n" + dex("ID1*A") + b"trailer\r\n\x1a"
    result = parse(data)
    assert codes(result) == [W.TEXT_AFTER_DXE, W.TEXT_BEFORE_DXS]
    assert result.audits[0].machine.serial == "A"


def test_missing_dxs_and_outside_set() -> None:
    data = dex("ID1*A").replace(DXS.encode() + b"\r\n", b"")
    assert codes(parse(data)) == [W.MISSING_DXS]
    data = dex("ID1*A").replace(b"\r\nST*", b"\r\nID1*B\r\nST*")
    result = parse(data)
    assert codes(result) == [W.OUTSIDE_SET]
    assert result.warnings[0].line == 2


def test_truncated() -> None:
    full = dex("ID1*A", "VA1*100*1*100*1")
    cut = full[: full.index(b"G85")]
    result = parse(cut)
    assert codes(result) == [W.CRC_MISSING, W.TRUNCATED]
    assert result.audits[0].damaged
    assert result.audits[0].paid.count_init == 1
    no_dxe = full[: full.index(b"DXE")]
    result = parse(no_dxe)
    assert codes(result) == [W.TRUNCATED]
    assert result.warnings[0].code is W.TRUNCATED  # file-level: the set itself is whole
    assert not result.audits[0].damaged


def test_pathological_lines_are_bounded() -> None:
    data = dex("ID1*A", "MA5" + "*1" * 100_000, *(["ZZZ*1"] * 500))
    result = parse(data)
    audit = result.audits[0]
    ma5 = next(r for r in audit.raw_segments if r.id == "MA5")
    assert len(ma5.elements) == 64
    unknown = [w for w in audit.warnings if w.code is W.UNKNOWN_SEGMENT]
    assert len(unknown) == 21  # 20, then one that counts the rest
    assert "480 more" in unknown[-1].message
    assert len(audit.raw_segments) == 501


def test_more_products_than_any_machine_is_damaging() -> None:
    audit = one(dex(*(["PA1*1*100", "PA2*1*100*1*100"] * 10_001)))
    assert len(audit.products) == 10_000
    assert audit.damaged
    assert {w.code for w in audit.warnings} == {W.TOO_LARGE}
