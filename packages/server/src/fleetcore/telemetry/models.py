"""Time-series tables: keys and series interned to integers, narrow rows per value kind.

A series is one (device, key, kind); rows are (series_id, ts in epoch ms, value). Numbers,
text, booleans and JSON live in separate tables so each row stays as narrow as its value.
On PostgreSQL the four value tables are range-partitioned by ts (daily, see partitions.py)
or TimescaleDB hypertables; on SQLite they are WITHOUT ROWID tables keyed (series_id, ts).
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import ARRAY, DOUBLE_PRECISION, JSONB
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeEngine

from fleetcore.db import Base, UTCDateTime, utcnow
from fleetcore_protocol.telemetry import Kind

Double = Float(53).with_variant(DOUBLE_PRECISION(), "postgresql")
JsonValue = JSON().with_variant(JSONB(), "postgresql")


class TelemetryKey(Base):
    """A key name with the kind of its values, interned to a small integer."""

    __tablename__ = "ts_keys"
    __table_args__ = (UniqueConstraint("name", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[int] = mapped_column(SmallInteger)


class Series(Base):
    """One device's values of one key."""

    __tablename__ = "ts_series"
    __table_args__ = (UniqueConstraint("device_id", "key_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    key_id: Mapped[int] = mapped_column(ForeignKey("ts_keys.id", ondelete="RESTRICT"))
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )


def _value_table(name: str, value_type: object) -> Table:
    # No foreign key to ts_series: checking one per row would halve the write rate, and
    # series rows are never deleted while their data exists.
    return Table(
        name,
        Base.metadata,
        Column("series_id", Integer, primary_key=True),
        Column("ts", BigInteger, primary_key=True),
        Column("value", value_type, nullable=False),  # type: ignore[arg-type]
        sqlite_with_rowid=False,
        postgresql_partition_by="RANGE (ts)",
    )


VALUE_TABLES: dict[Kind, Table] = {
    Kind.NUMBER: _value_table("ts_num", Double),
    Kind.TEXT: _value_table("ts_text", Text),
    Kind.BOOLEAN: _value_table("ts_bool", Boolean),
    Kind.JSON: _value_table("ts_json", JsonValue),
}


def _rollup_table(name: str) -> Table:
    return Table(
        name,
        Base.metadata,
        Column("series_id", Integer, primary_key=True),
        Column("bucket", BigInteger, primary_key=True),  # bucket start, epoch ms
        Column("cnt", Integer, nullable=False),
        Column("total", Double, nullable=False),
        Column("vmin", Double, nullable=False),
        Column("vmax", Double, nullable=False),
        Column("first_ts", BigInteger, nullable=False),
        Column("vfirst", Double, nullable=False),
        Column("last_ts", BigInteger, nullable=False),
        Column("vlast", Double, nullable=False),
        sqlite_with_rowid=False,
        postgresql_with={"fillfactor": 70},  # room for in-place (HOT) updates; migration 0016
    )


# Roll-ups of numeric series, kept current per batch (late data included).
ROLLUP_1M = _rollup_table("ts_rollup_1m")
ROLLUP_1H = _rollup_table("ts_rollup_1h")
ROLLUPS: dict[int, Table] = {60_000: ROLLUP_1M, 3_600_000: ROLLUP_1H}

LATEST = Table(
    "ts_latest",
    Base.metadata,
    Column("series_id", Integer, primary_key=True),
    Column("ts", BigInteger, nullable=False),
    Column("num", Double),
    Column("text", Text),
    Column("bool", Boolean),
    Column("json", JsonValue),
    postgresql_with={"fillfactor": 70},
)


class Retention(Base):
    """How long an organization keeps raw readings and each roll-up (days; 0 = forever)."""

    __tablename__ = "ts_retention"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    raw_days: Mapped[int] = mapped_column(Integer)
    rollup_1m_days: Mapped[int] = mapped_column(Integer)
    rollup_1h_days: Mapped[int] = mapped_column(Integer)
    # Delete raw readings of a day only once it is archived (None: the platform default).
    requires_archive: Mapped[bool | None] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


_PARTITION = re.compile(r"^ts_(num|text|bool|json)_(default|p\d{8})$")


def is_partition(table_name: str) -> bool:
    """True for the partitions of the value tables (managed at run time, not by Alembic)."""
    return _PARTITION.match(table_name) is not None


def _array(item: type[TypeEngine[Any]]) -> TypeEngine[Any]:
    return LargeBinary().with_variant(ARRAY(item), "postgresql")


# PostgreSQL: each batch's new numbers, logged with them and merged into the roll-ups and
# latest values soon after (see pg_sql.py). Unused on SQLite, which merges at once.
ROLLUP_PENDING = Table(
    "ts_rollup_pending",
    Base.metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("series_ids", _array(Integer), nullable=False),
    Column("stamps", _array(BigInteger), nullable=False),
    Column("vals", _array(DOUBLE_PRECISION), nullable=False),
)

# Closed hours of numeric series, packed (see compaction.py): one row per series and hour,
# the readings' ms offsets from the hour's start (ascending) and their values as two
# arrays that PostgreSQL's TOAST compresses; on SQLite `vals` holds the hour as zlib'd JSON
# and `offs` is empty (sqlite_packing.py). Raw and packed rows never hold the same
# (series_id, ts); readers take both (packed.py). A rowid table on SQLite (migration 0031).
PACKED_NUM = Table(
    "ts_num_packed",
    Base.metadata,
    Column("series_id", Integer, primary_key=True),
    Column("block", BigInteger, primary_key=True),  # the hour's start, epoch ms
    Column("n", Integer, nullable=False),  # readings held: pages pick blocks without the arrays
    Column("offs", _array(Integer), nullable=False),
    Column("vals", _array(DOUBLE_PRECISION), nullable=False),
)
