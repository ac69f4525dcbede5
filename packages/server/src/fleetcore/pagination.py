"""Cursor pagination: opaque cursors over (sort value, id), stable under inserts.

A cursor comes back from the client, so paginate() checks that its two values have the
types of the columns they are compared with: a forged cursor would otherwise compare unlike
types in SQL (a string with a timestamp, a naive time with an aware column), which the
databases answer differently or with an error. One check here serves every list."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

import orjson
from fastapi import Query
from pydantic import BaseModel
from sqlalchemy import BigInteger, Integer, Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute

from fleetcore.db import UTCDateTime
from fleetcore.errors import Invalid

T = TypeVar("T")
# Any select, of one entity or of several columns (Select is variadic).
S = TypeVar("S", bound=Select[*tuple[Any, ...]])

LimitQuery = Annotated[int, Query(ge=1, le=500, description="page size")]
CursorQuery = Annotated[
    str | None, Query(max_length=512, description="next_cursor of the previous page")
]


class Page(BaseModel, Generic[T]):
    """One page of a list; pass next_cursor back to get the next one."""

    items: list[T]
    next_cursor: str | None = None


def _encode_value(value: Any) -> list[Any]:
    if isinstance(value, datetime):
        return ["dt", value.isoformat()]
    if isinstance(value, uuid.UUID):
        return ["uuid", str(value)]
    return ["v", value]


def _decode_value(tagged: list[Any]) -> Any:
    kind, raw = tagged
    if kind == "dt":
        return datetime.fromisoformat(raw)
    if kind == "uuid":
        return uuid.UUID(raw)
    return raw


def encode_cursor(sort_value: Any, row_id: Any) -> str:
    """An opaque cursor after the row with this sort value and id."""
    raw = orjson.dumps([_encode_value(sort_value), _encode_value(row_id)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[Any, Any]:
    """The (sort value, id) a cursor points after; Invalid if tampered with."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        sort_value, row_id = orjson.loads(raw)
        return _decode_value(sort_value), _decode_value(row_id)
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise Invalid("the cursor is not valid", code="INVALID_CURSOR") from None


def _fits(value: Any, column: InstrumentedAttribute[Any]) -> bool:
    """True if a cursor value can be compared with the column."""
    expression = column.expression
    if value is None:
        return bool(getattr(expression, "nullable", False))
    column_type = expression.type
    if isinstance(column_type, UTCDateTime):
        return isinstance(value, datetime) and value.tzinfo is not None
    if isinstance(column_type, Integer):
        # `type is`, not isinstance: True is an int. The range keeps a forged number from
        # overflowing the driver (PostgreSQL's INTEGER is 32 bits, BIGINT 64).
        bits = 63 if isinstance(column_type, BigInteger) else 31
        return type(value) is int and -(2**bits) <= value < 2**bits
    # Every mapped column's type names its Python type (tests/test_pagination.py checks it),
    # so a forged cursor never reaches the database uncompared.
    expected = column_type.python_type
    return expected is object or type(value) is expected


def _after(
    cursor: str, sort: InstrumentedAttribute[Any], id_column: InstrumentedAttribute[Any]
) -> tuple[Any, Any]:
    """The (sort value, id) a cursor points after, checked against the list's columns."""
    after_value, after_id = decode_cursor(cursor)
    if not (_fits(after_value, sort) and _fits(after_id, id_column)):
        raise Invalid("the cursor does not fit this list", code="INVALID_CURSOR")
    return after_value, after_id


def paginate(
    query: S,
    *,
    sort: InstrumentedAttribute[Any],
    id_column: InstrumentedAttribute[Any],
    cursor: str | None,
    limit: int,
    descending: bool = False,
) -> S:
    """Order by (sort, id), start after the cursor, fetch one extra row to detect more."""
    if cursor is not None:
        after_value, after_id = _after(cursor, sort, id_column)
        if descending:
            query = query.where(
                or_(sort < after_value, and_(sort == after_value, id_column < after_id))
            )
        else:
            query = query.where(
                or_(sort > after_value, and_(sort == after_value, id_column > after_id))
            )
    order = (sort.desc(), id_column.desc()) if descending else (sort.asc(), id_column.asc())
    return query.order_by(*order).limit(limit + 1)


def page_of(
    rows: Sequence[T], *, limit: int, sort_attr: str, id_attr: str = "id"
) -> tuple[list[T], str | None]:
    """Trim the extra row and compute the next cursor."""
    items = list(rows[:limit])
    if len(rows) <= limit or not items:
        return items, None
    last = items[-1]
    return items, encode_cursor(getattr(last, sort_attr), getattr(last, id_attr))
