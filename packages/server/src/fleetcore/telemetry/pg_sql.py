"""The writer's SQL: PostgreSQL's batch statements and the roll-up upsert both databases use.

On PostgreSQL the numbers of a batch are inserted and, in the same statement, the new ones
logged to ts_rollup_pending as one row of three arrays (durable with the readings). The
roll-ups and numeric latest values are merged from that log by `apply_sql`, for the log rows
of many batches at once when the pipeline is busy: a roll-up or latest row is then upserted
once per batch group instead of once per batch, which is where the writer's time went
(three upserts of every series per batch cost three times the insert of its readings).

Locks are taken in one order by every writer, so several writers never deadlock: value
rows by (series_id, ts), kind after kind; then the roll-up and latest rows, each table by
its key, the tables in the fixed order of the one apply statement's plan. Log rows are
claimed with SKIP LOCKED and never waited for.
"""

# ruff: noqa: S608  # bulk SQL built from constant table names; values go as parameters

from __future__ import annotations

from fleetcore.telemetry.models import ROLLUPS, VALUE_TABLES
from fleetcore_protocol.telemetry import Kind

STAGE_TYPES = {
    Kind.NUMBER: ("REAL", "double precision"),
    Kind.TEXT: ("TEXT", "text"),
    Kind.BOOLEAN: ("INTEGER", "boolean"),
    Kind.JSON: ("TEXT", "jsonb"),
}
LATEST_COLUMN = {Kind.NUMBER: "num", Kind.TEXT: "text", Kind.BOOLEAN: "bool", Kind.JSON: "json"}
LATEST_UPDATE = (
    "ts = excluded.ts, num = excluded.num, text = excluded.text, bool = excluded.bool, "
    "json = excluded.json WHERE excluded.ts >= ts_latest.ts"
)
ROLLUP_COLUMNS = (
    "series_id",
    "bucket",
    "cnt",
    "total",
    "vmin",
    "vmax",
    "first_ts",
    "vfirst",
    "last_ts",
    "vlast",
)


def _floor(column: str, width: int) -> str:
    return f"{column} - (({column} % {width}) + {width}) % {width}"  # floor, as for negative ts


def rollup_merge(table: str, *, least: str, greatest: str) -> str:
    """ON CONFLICT clause adding a group of new numbers to an existing roll-up bucket."""
    return (
        "ON CONFLICT (series_id, bucket) DO UPDATE SET "
        f"cnt = {table}.cnt + excluded.cnt, "
        f"total = {table}.total + excluded.total, "
        f"vmin = {least}({table}.vmin, excluded.vmin), "
        f"vmax = {greatest}({table}.vmax, excluded.vmax), "
        f"vfirst = CASE WHEN excluded.first_ts < {table}.first_ts "
        f"THEN excluded.vfirst ELSE {table}.vfirst END, "
        f"first_ts = {least}({table}.first_ts, excluded.first_ts), "
        f"vlast = CASE WHEN excluded.last_ts >= {table}.last_ts "
        f"THEN excluded.vlast ELSE {table}.vlast END, "
        f"last_ts = {greatest}({table}.last_ts, excluded.last_ts)"
    )


def rollup_sql(table: str, width: int, source: str, *, least: str, greatest: str) -> str:
    """Merge the new numbers in `source` (unique per series and ts) into the roll-up
    buckets of `table`; late data included."""
    return (
        f"INSERT INTO {table} ({', '.join(ROLLUP_COLUMNS)}) "
        "SELECT g.series_id, g.bucket, g.cnt, g.total, g.vmin, g.vmax, "
        "g.first_ts, f.value, g.last_ts, l.value "
        f"FROM (SELECT series_id, {_floor('ts', width)} AS bucket, count(*) AS cnt, "
        "sum(value) AS total, min(value) AS vmin, max(value) AS vmax, min(ts) AS first_ts, "
        f"max(ts) AS last_ts FROM {source} GROUP BY 1, 2) AS g "
        f"JOIN {source} AS f ON f.series_id = g.series_id AND f.ts = g.first_ts "
        f"JOIN {source} AS l ON l.series_id = g.series_id AND l.ts = g.last_ts "
        f"WHERE true ORDER BY 1, 2 {rollup_merge(table, least=least, greatest=greatest)}"
    )


def insert_sql(kind: Kind) -> str:
    """Insert a batch's rows of one kind ($1 series ids, $2 stamps, $3 values, $4 count),
    first copy of a (series, ts) winning; numbers are logged for `apply_sql`, other kinds
    merged into latest at once. Returns a count, and which rows were new when some were not."""
    table = VALUE_TABLES[kind].name
    parts = [
        "WITH batch AS (SELECT * FROM unnest($1::integer[], $2::bigint[], "
        f"$3::{STAGE_TYPES[kind][1]}[]) WITH ORDINALITY AS b (series_id, ts, value, ord)), "
        f"ins AS (INSERT INTO {table} (series_id, ts, value) "
        "SELECT series_id, ts, value FROM batch ORDER BY series_id, ts, ord "  # lock order
        "ON CONFLICT DO NOTHING RETURNING series_id, ts, value)"
    ]
    if kind is Kind.NUMBER:
        parts.append(
            ", log AS (INSERT INTO ts_rollup_pending (series_ids, stamps, vals) "
            "SELECT array_agg(series_id), array_agg(ts), array_agg(value) FROM ins "
            "HAVING count(*) > 0)"
        )
    else:
        parts.append(
            f", latest AS (INSERT INTO ts_latest (series_id, ts, {LATEST_COLUMN[kind]}) "
            "SELECT DISTINCT ON (series_id) series_id, ts, value FROM ins "
            f"ORDER BY series_id, ts DESC ON CONFLICT (series_id) DO UPDATE SET {LATEST_UPDATE})"
        )
    parts.append(
        " SELECT count(*), CASE WHEN count(*) < $4 THEN array_agg(series_id) END, "
        "CASE WHEN count(*) < $4 THEN array_agg(ts) END FROM ins"
    )
    return "".join(parts)


def apply_sql() -> str:
    """Claim every unclaimed ts_rollup_pending row and merge its numbers into the roll-ups
    and latest values; returns how many numbers that was.

    The readings are grouped once: each roll-up level is grouped from the one below it (1 h
    buckets from 1 min buckets), and latest values from the lowest. A group's first and last
    values ride with their stamps, min/max of ARRAY[ts, value] (stamps are unique per series
    and exact in a double), so no join is needed (the planner cannot estimate unnested logs).
    """
    parts = [
        "WITH taken AS (DELETE FROM ts_rollup_pending WHERE id IN (SELECT id FROM "
        "ts_rollup_pending ORDER BY id FOR UPDATE SKIP LOCKED) "
        "RETURNING series_ids, stamps, vals), "
        "new AS (SELECT r.series_id, r.ts, r.value FROM taken, "
        "unnest(taken.series_ids, taken.stamps, taken.vals) AS r (series_id, ts, value))"
    ]
    below = ""
    for n, (width, table) in enumerate(sorted(ROLLUPS.items())):
        level = f"level{n}"
        if not below:
            grouped = (
                f"SELECT series_id, {_floor('ts', width)} AS bucket, count(*) AS cnt, "
                "sum(value) AS total, min(value) AS vmin, max(value) AS vmax, "
                "min(ts) AS first_ts, (min(ARRAY[ts, value]))[2] AS vfirst, "
                "max(ts) AS last_ts, (max(ARRAY[ts, value]))[2] AS vlast FROM new GROUP BY 1, 2"
            )
        else:
            grouped = (
                f"SELECT series_id, {_floor('bucket', width)} AS bucket, sum(cnt) AS cnt, "
                "sum(total) AS total, min(vmin) AS vmin, max(vmax) AS vmax, "
                "min(first_ts) AS first_ts, (min(ARRAY[first_ts, vfirst]))[2] AS vfirst, "
                "max(last_ts) AS last_ts, (max(ARRAY[last_ts, vlast]))[2] AS vlast "
                f"FROM {below} GROUP BY 1, 2"
            )
        parts.append(
            f", {level} AS ({grouped})"
            f", upsert{n} AS (INSERT INTO {table.name} ({', '.join(ROLLUP_COLUMNS)}) "
            f"SELECT {', '.join(ROLLUP_COLUMNS)} FROM {level} ORDER BY series_id, bucket "
            f"{rollup_merge(table.name, least='LEAST', greatest='GREATEST')})"
        )
        below = level
    parts.append(
        ", latest AS (INSERT INTO ts_latest (series_id, ts, num) "
        "SELECT series_id, max(last_ts), (max(ARRAY[last_ts, vlast]))[2] FROM level0 "
        f"GROUP BY series_id ORDER BY series_id ON CONFLICT (series_id) DO UPDATE SET "
        f"{LATEST_UPDATE})"
        " SELECT coalesce(sum(cnt), 0) FROM level0"  # `new` read once, not kept
    )
    return "".join(parts)
