"""Hypothesis strategies for JSON as devices send it: valid-ish text with odd values.

Built as text, not from Python values, so they reach what a serializer would never write:
NaN and Infinity literals, integers of hundreds of digits, -0, lone surrogate escapes,
escaped NUL, very long keys, duplicate keys, nesting far past any sane depth; then, as
bytes, a BOM, UTF-16, stray non-UTF-8 bytes or a cut anywhere.
"""

from __future__ import annotations

import json

from hypothesis import strategies as st

from fleetcore.devices.models import DeviceProfile

ODD_NUMBERS = (
    "NaN",
    "-NaN",
    "Infinity",
    "-Infinity",
    "-0",
    "-0.0",
    "0e0",
    "1e400",
    "-1e400",
    "1e-400",
    "1" + "0" * 400,  # 10**400: beyond a double, within Python's int parsing limit
    "-" + "9" * 400,
    "9" * 5000,  # beyond Python's 4300-digit int parsing limit
    "18446744073709551615",  # 2**64 - 1
    "18446744073709551616",  # 2**64
    "-9223372036854775809",  # -2**63 - 1
    "1.7976931348623157e308",
    "4.9e-324",
    "01",
    "1.",
    ".5",
    "+1",
    "0x10",
)
ODD_STRINGS = (
    '"\\ud800"',  # lone high surrogate
    '"\\udc00x"',  # lone low surrogate
    '"\\ud83d\\ude00"',  # a valid pair
    '"\\u0000"',
    '"a\\u0000b"',
    '"\\\\u0000"',  # a backslash and the text u0000: not a NUL
    '"\u202e\ufeff"',
    '"\\/"',
    '""',
)


def weighted(
    common: st.SearchStrategy[str], rare: st.SearchStrategy[str], odds: int
) -> st.SearchStrategy[str]:
    """`rare` once in `odds` draws, else `common` (one_of would draw each half the time)."""
    return st.integers(1, odds).flatmap(lambda n: rare if n == 1 else common)


def _string_literal(text: str) -> str:
    # Lone surrogates escaped (a raw one is not UTF-8 at all and stops every parser early).
    surrogates = any("\ud800" <= ch <= "\udfff" for ch in text)
    return json.dumps(text, ensure_ascii=surrogates)


# Mostly ordinary values, so that most documents parse and reach the checks behind.
_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
keys = st.one_of(
    st.sampled_from(
        ["t", "temperature", "ts", "values", "type", "severity", "data", "a.b:c-d/e_f", ""]
    ),
    _text.filter(lambda k: len(k) <= 20),
    st.integers(1, 400).map(lambda n: "k" * n),  # around the 128-character key limit
    st.sampled_from(["a\n", "a\r\n", "\na", "a\x00", "\ud800", "caf\u00e9", "a b"]),
)

_ordinary = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    _text.map(_string_literal),
    st.sampled_from(["true", "false", "null", "0", "1.5", '"on"']),
)
_odd = st.one_of(
    st.sampled_from(ODD_NUMBERS + ODD_STRINGS),
    st.integers(0, 10_000).map(lambda n: _string_literal("x" * n)),  # around the text limit
)
scalars = weighted(_ordinary, _odd, 15)


def _array(items: list[str]) -> str:
    return "[" + ",".join(items) + "]"


def _object(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{_string_literal(k)}:{v}" for k, v in pairs) + "}"


values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5).map(_array),
        st.lists(st.tuples(keys, inner), max_size=5).map(_object),
    ),
    max_leaves=25,
)


@st.composite
def deep(draw: st.DrawFn, *, closed: bool = True) -> str:
    """Arrays or objects nested from a few levels to far beyond the recursion limit."""
    depth = draw(
        st.one_of(
            st.integers(1, 40), st.integers(200, 300), st.integers(300, 3_000), st.just(100_000)
        )
    )
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('[{"a":', "}]")]))
    core = draw(st.sampled_from(["1", "[]", "{}", '"x"']))
    return opener * depth + core + (closer * depth if closed else "")


def telemetry_documents() -> st.SearchStrategy[str]:
    """Payloads in and around the telemetry shapes, with odd values and timestamps."""
    timestamps = st.one_of(
        st.sampled_from(ODD_NUMBERS),
        st.integers(1_700_000_000_000, 1_800_000_600_000).map(str),
        st.sampled_from(['"1700000000000"', "true", "null", "[]"]),
    )
    flat = st.lists(st.tuples(keys, weighted(values, deep(), 5)), min_size=1, max_size=6).map(
        _object
    )
    stamped = st.builds(
        lambda ts, body: _object([("ts", ts), ("values", body)]), timestamps, flat | values
    )
    entry = st.one_of(flat, stamped, values)
    return weighted(
        st.one_of(entry, st.lists(entry, max_size=5).map(_array)), deep(closed=False) | deep(), 8
    )


def event_documents() -> st.SearchStrategy[str]:
    """Payloads in and around the event shapes."""
    types = st.one_of(
        st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True).map(_string_literal),
        st.sampled_from(['"a\\n"', '""', '"' + "t" * 65 + '"']),
        scalars,
    )
    severities = st.one_of(st.sampled_from(['"info"', '"critical"', "{}", "[]"]), scalars)
    stamps = st.one_of(st.integers(1_700_000_000_000, 1_800_000_600_000).map(str), scalars)
    optional = st.one_of(
        st.tuples(st.just("severity"), severities),
        st.tuples(st.just("data"), weighted(values, deep(), 5)),
        st.tuples(st.just("ts"), stamps),
    )
    event = st.builds(
        lambda first, rest, odd: _object([first, *rest, *odd]),
        st.tuples(st.just("type"), types),
        st.lists(optional, max_size=3),
        st.one_of(st.just([]), st.just([]), st.lists(st.tuples(keys, values), max_size=1)),
    )
    too_many = st.integers(99, 102).map(lambda n: _array(['{"type":"a"}'] * n))
    return st.one_of(
        event, event, st.lists(event, max_size=4).map(_array), too_many, deep(closed=False)
    )


@st.composite
def as_bytes(draw: st.DrawFn, text: str) -> bytes:
    """The document's bytes, sometimes with a BOM, as UTF-16, with a stray byte, or cut."""
    data = text.encode("utf-8", "surrogatepass")  # a raw lone surrogate: not UTF-8
    how = draw(st.sampled_from(["plain"] * 16 + ["bom", "utf16", "stray", "cut"]))
    if how == "bom":
        return b"\xef\xbb\xbf" + data
    if how == "utf16":
        return text.encode("utf-16", "surrogatepass")
    if how in ("stray", "cut") and data:
        at = draw(st.integers(0, len(data)))
        if how == "cut":
            return data[:at]
        stray = draw(st.sampled_from([b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\x00"]))
        return data[:at] + stray + data[at:]
    return data


def documents_as_bytes(documents: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    """Each document through `as_bytes`."""
    return documents.flatmap(as_bytes)


def device_profiles() -> st.SearchStrategy[DeviceProfile]:
    """Profiles declaring some of the keys the documents use, of any type and range."""
    keys = st.fixed_dictionaries(
        {"key": st.sampled_from(["t", "k", "s", "on", "j", "temperature"])},
        optional={
            "type": st.sampled_from(["number", "string", "boolean", "json"]),
            "min": st.floats(allow_nan=False) | st.integers(),
            "max": st.floats(allow_nan=False) | st.integers(),
        },
    )
    return st.builds(
        lambda declared, policy: DeviceProfile(telemetry_keys=declared, out_of_range=policy),
        st.lists(keys, max_size=4),
        st.sampled_from(["reject", "flag"]),
    )
