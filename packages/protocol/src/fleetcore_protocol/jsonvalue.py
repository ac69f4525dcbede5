"""What makes a decoded JSON value storable: bounded nesting, 64-bit integers, Unicode text.

A parser accepts more than storage can take: json.loads reads integers of any size and lone
surrogate escapes, and both json and orjson read nesting (about 1,000 levels) that orjson
cannot write back (254 levels), so a value that passed the decoder would fail the whole
write batch it shares with other devices. Values are checked here, iteratively: a check
must not itself recurse on what it guards against.
"""

from __future__ import annotations

import math
from typing import Any

# Deep enough for any real document; far from orjson's 254 and the interpreter's limit.
MAX_DEPTH = 32
# orjson writes integers from -2**63 to 2**64 - 1 (and reads larger ones as floats).
_MIN_INT = -(2**63)
_MAX_INT = 2**64 - 1


def unstorable_text(text: str) -> str | None:
    """Why a string cannot be stored as UTF-8 text, or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "text must be valid Unicode (it holds a lone surrogate)"
    return None


def unstorable(value: Any, max_depth: int = MAX_DEPTH) -> str | None:
    """Why a JSON object or array cannot be stored as it is, or None."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            if depth > max_depth:
                return f"JSON nested deeper than {max_depth} levels"
            for key, child in item.items():
                if problem := unstorable_text(key):
                    return problem
                pending.append((child, depth + 1))
        elif isinstance(item, list):
            if depth > max_depth:
                return f"JSON nested deeper than {max_depth} levels"
            pending.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            if problem := unstorable_text(item):
                return problem
        elif isinstance(item, float) and not math.isfinite(item):
            return "numbers must be finite"
        elif (
            isinstance(item, int)
            and not isinstance(item, bool)
            and not _MIN_INT <= item <= _MAX_INT
        ):
            return "integers in JSON must fit in 64 bits"
    return None
