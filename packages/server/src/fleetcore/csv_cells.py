"""CSV cells that spreadsheets read as text: device strings cannot become formulas.

A cell that starts with = + - @ (or a tab or carriage return) is a formula to Excel,
LibreOffice and Google Sheets, so a device reporting `=HYPERLINK(...)` could run one on the
machine of whoever opens an export (OWASP "CSV injection"). Such string cells are written
with a leading single quote, which spreadsheets show as text. A cell that already starts with
a quote gets one more, so that `unescape_cell` gives back exactly what was stored (import
reads exports). Numbers are not strings here and are never escaped: -5.2 stays a number.
"""

from __future__ import annotations

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_QUOTE = "'"


def escape_cell(text: str) -> str:
    """`text` as a CSV string cell no spreadsheet runs as a formula."""
    if text.startswith((*_FORMULA_START, _QUOTE)):
        return _QUOTE + text
    return text


def unescape_cell(text: str) -> str:
    """A string cell as it was before `escape_cell` (a quote that escapes nothing stays)."""
    if text.startswith(_QUOTE) and text[1:].startswith((*_FORMULA_START, _QUOTE)):
        return text[1:]
    return text
