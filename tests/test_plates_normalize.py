"""Plate normalisation (pure): a table of real-looking reads and typings, properties with
Hypothesis, and the fuzzy match's distance and deletion neighbourhoods."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from fleetcore.errors import Invalid
from fleetcore.plates.normalize import distance, fold, neighbourhood, normalize
from fleetcore.plates.provinces import PROVINCES
from fleetcore.plates.reads import parse_read

BANGKOK = "กรุงเทพมหานคร"


@pytest.mark.parametrize(
    ("text", "norm", "key", "region"),
    [
        # Thai plates: consonants and digits, a leading digit, the province split off.
        ("กข 1234 กรุงเทพมหานคร", "กข1234", "กข1234", BANGKOK),
        ("1กข 1234 กรุงเทพมหานคร", "1กข1234", "1กข1234", BANGKOK),
        ("1กข-1234", "1กข1234", "1กข1234", None),
        ("กข ๑๒๓๔ เชียงใหม่", "กข1234", "กข1234", "เชียงใหม่"),
        ("๙กก๙๙๙๙", "9กก9999", "9กก9999", None),
        ("กข1234กรุงเทพมหานคร", "กข1234", "กข1234", BANGKOK),
        ("กข 1234\nกรุงเทพฯ", "กข1234", "กข1234", BANGKOK),
        ("ขค 99 ภูเก็ต", "ขค99", "ขค99", "ภูเก็ต"),
        ("ฃฅ 12", "ฃฅ12", "ขค12", None),  # obsolete letters fold to the live ones
        ("กข 1234 Bangkok", "กข1234", "กข1234", BANGKOK),
        ("กข 1234 bangkok", "กข1234", "กข1234", BANGKOK),
        ("กข 1234 Chiang Mai", "กข1234", "กข1234", "เชียงใหม่"),
        ("กข 1234 Chon Buri", "กข1234", "กข1234", "ชลบุรี"),
        ("กข 1234 chonburi", "กข1234", "กข1234", "ชลบุรี"),
        ("กข 12 Nan", "กข12", "กข12", "น่าน"),  # a short name counts beside a Thai plate
        ("กข 1234 Nakhon Si Thammarat", "กข1234", "กข1234", "นครศรีธรรมราช"),
        ("ก สกลนคร", "ก", "ก", "สกลนคร"),
        ("สกลนคร", "สกลนคร", "สกลนคร", None),  # a province alone is no plate: kept
        # Latin plates: case, spaces, dashes and dots dropped; O/Q -> 0, I -> 1 in the key.
        ("AB-123-CD", "AB123CD", "AB123CD", None),
        ("ab 123 cd", "AB123CD", "AB123CD", None),
        ("AB.123.CD", "AB123CD", "AB123CD", None),
        ("B 1234 XYZ", "B1234XYZ", "B1234XYZ", None),
        ("OI 0123", "OI0123", "010123", None),
        ("Q1 2AB", "Q12AB", "012AB", None),
        ("ＡＢ１２３", "AB123", "AB123", None),  # full width, as an IME types
        ("123 NAN", "123NAN", "123NAN", None),  # a Latin plate keeps short words
        ("ABC 123 Bangkok", "ABC123", "ABC123", BANGKOK),
        ("Bangkok", "BANGKOK", "BANGK0K", None),
        ("B8 S5", "B8S5", "B8S5", None),  # letters plates use are not folded
        ("--", "", "", None),
    ],
)
def test_normalise_table(text: str, norm: str, key: str, region: str | None) -> None:
    found = normalize(text)
    assert (found.plate_norm, found.plate_key, found.region) == (norm, key, region)


def test_every_province_is_recognised_in_thai_and_english() -> None:
    assert len(PROVINCES) == 77
    for thai, spellings in PROVINCES:
        assert normalize(f"กข 1234 {thai}").region == thai, thai
        for spelling in spellings:
            assert normalize(f"กข 1234 {spelling}").region == thai, spelling
            assert normalize(f"กข 1234 {spelling}").plate_norm == "กข1234"


PLATE_CHARS = st.sampled_from(
    list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") + [chr(c) for c in range(0x0E01, 0x0E2F)]
)
SEPARATORS = st.sampled_from([" ", "-", ".", "  ", " - "])
TEXT = st.text(
    alphabet=st.characters(
        codec="utf-8", exclude_categories=("Cs",), max_codepoint=0x0EFF
    ),
    max_size=30,
)


@settings(max_examples=300, derandomize=True, database=None)
@given(TEXT)
def test_normalising_is_idempotent(text: str) -> None:
    once = normalize(text)
    twice = normalize(once.plate_norm)
    assert twice.plate_norm == once.plate_norm
    assert twice.plate_key == once.plate_key
    assert fold(once.plate_key) == once.plate_key


@settings(max_examples=300, derandomize=True, database=None)
@given(st.lists(PLATE_CHARS, min_size=1, max_size=12), st.data())
def test_separators_and_case_never_matter(chars: list[str], data: st.DataObject) -> None:
    plate = "".join(chars)
    assume(normalize(plate).region is None)  # a province inside is split off, not a plate
    spaced = ""
    for char in chars:
        spaced += char + data.draw(st.sampled_from(["", ""]) | SEPARATORS)
    assume(normalize(spaced).region is None)
    assert normalize(spaced).plate_norm == normalize(plate).plate_norm
    assert normalize(plate.lower()).plate_key == normalize(plate).plate_key
    assert normalize(spaced).plate_norm == plate.upper()


@settings(max_examples=300, derandomize=True, database=None)
@given(st.lists(PLATE_CHARS, min_size=1, max_size=10), st.lists(PLATE_CHARS, max_size=10))
def test_within_one_edit_the_neighbourhoods_meet(a_chars: list[str], b_chars: list[str]) -> None:
    a, b = "".join(a_chars), "".join(b_chars)
    if distance(a, b) <= 1:
        assert neighbourhood(a) & neighbourhood(b)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("AB123CD", "AB123CD", 0),
        ("AB123CD", "AB124CD", 1),  # substituted
        ("AB123CD", "AB13CD", 1),  # dropped
        ("AB123CD", "AB1234CD", 1),  # added
        ("AB123CD", "BA123CD", 2),  # swapped: two edits
        ("AB123CD", "XY123CD", 2),
        ("กข1234", "กค1234", 1),
        ("กข1234", "ขก1234", 2),
        ("1กข1234", "กข1234", 1),
        ("", "A", 1),
    ],
)
def test_edit_distance(a: str, b: str, expected: int) -> None:
    assert distance(a, b, limit=2) == expected
    assert distance(a, b) == min(expected, 2)  # beyond the limit: limit + 1


def test_neighbourhood_is_the_key_and_its_single_deletions() -> None:
    assert neighbourhood("AB1") == {"AB1", "B1", "A1", "AB"}
    assert neighbourhood("กข1") == {"กข1", "ข1", "ก1", "กข"}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"confidence": 0.9}, "data.plate"),
        ({"plate": "", "confidence": 0.9}, "data.plate"),
        ({"plate": "A" * 21, "confidence": 0.9}, "data.plate"),
        ({"plate": "--", "confidence": 0.9}, "data.plate"),
        ({"plate": 1234, "confidence": 0.9}, "data.plate"),
        ({"plate": "AB1"}, "data.confidence"),
        ({"plate": "AB1", "confidence": 1.5}, "data.confidence"),
        ({"plate": "AB1", "confidence": -0.1}, "data.confidence"),
        ({"plate": "AB1", "confidence": True}, "data.confidence"),
        ({"plate": "AB1", "confidence": "0.9"}, "data.confidence"),
        ({"plate": "AB1", "confidence": 0.9, "direction": "up"}, "data.direction"),
        ({"plate": "AB1", "confidence": 0.9, "lane": 100}, "data.lane"),
        ({"plate": "AB1", "confidence": 0.9, "lane": 1.5}, "data.lane"),
        ({"plate": "AB1", "confidence": 0.9, "lane": True}, "data.lane"),
        ({"plate": "AB1", "confidence": 0.9, "bbox": [1, 2, 3]}, "data.bbox"),
        ({"plate": "AB1", "confidence": 0.9, "bbox": [1, 2, 3, -4]}, "data.bbox"),
        ({"plate": "AB1", "confidence": 0.9, "bbox": [1, 2, 3, 4.5]}, "data.bbox"),
        ({"plate": "AB1", "confidence": 0.9, "camera": ""}, "data.camera"),
        ({"plate": "AB1", "confidence": 0.9, "camera": "c" * 65}, "data.camera"),
        ({"plate": "AB1", "confidence": 0.9, "vehicle_color": 3}, "data.vehicle_color"),
        ({"plate": "AB1", "confidence": 0.9, "speed": 40}, "data.speed"),
    ],
)
def test_bad_reads_are_refused_naming_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(Invalid) as caught:
        parse_read(data, 3)
    assert caught.value.code == "INVALID_PLATE_READ"
    assert caught.value.details == {"index": 3, "field": field}


def test_a_full_read_is_parsed() -> None:
    read = parse_read(
        {
            "plate": "1กข 1234 Bangkok",
            "confidence": 1,
            "camera": "gate-1",
            "direction": "in",
            "lane": 0,
            "bbox": [10, 20, 300, 80],
            "vehicle_type": "car",
            "vehicle_color": "white",
        },
        None,
    )
    assert read.plate_norm == "1กข1234"
    assert read.region == BANGKOK
    assert read.confidence == 1.0
    assert read.bbox == (10, 20, 300, 80)
    assert (read.camera, read.direction, read.lane) == ("gate-1", "in", 0)
    given_region = parse_read({"plate": "AB1", "confidence": 0.5, "region": "TX"}, None)
    assert given_region.region == "TX"
    named = parse_read({"plate": "กข 12", "confidence": 0.5, "region": "chiang mai"}, None)
    assert named.region == "เชียงใหม่"
