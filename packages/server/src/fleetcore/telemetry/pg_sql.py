"""The writer's SQL: PostgreSQL's batch statements and the roll-up upsert both databases use.

On PostgreSQL the new numbers of a batch are logged to ts_rollup_pending as one row of three
arrays, in the batch's transaction (durable with the readings). Most batches hold no reading
that is already stored, so the writer first copies the numbers straight into ts_num (binary
COPY, sorted by key; about twice as fast as a staged INSERT ... ON CONFLICT) and logs them
from its own arrays (`LOG_SQL`); a unique violation rolls that back and the batch is written
again through the stage (`stage_sql`, `insert_sql`, `new_numbers_sql`). The roll-ups and
numeric latest values are merged from the log by `apply_sql`, for the log rows of many
batches at once when the pipeline is busy: a roll-up or latest row is then upserted once per
batch group instead of once per batch (three upserts of every series per batch cost three
times the insert of its readings).

Locks are taken in one order by every writer, so several writers never deadlock: value
rows by (series_id, ts), kind after kind; then the roll-up and latest rows, each table by
its key, the tables in the fixed order of the one apply statement's plan. Log rows are
claimed with SKIP LOCKED and never waited for.
"""

# ruff: noqa: S608  # bulk SQL built from constant table names; values go as parameters

from __future__ import annotations

from fleetcore.telemetry.models import ROLLUPS, VALUE_TABLES
from fleetcore.telemetry.packed import BLOCK_MS
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


def floor_sql(column: str, width: int) -> str:
    """SQL of `column` floored to a multiple of `width` (negative values too)."""
    return f"{column} - (({column} % {width}) + {width}) % {width}"


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
        f"FROM (SELECT series_id, {floor_sql('ts', width)} AS bucket, count(*) AS cnt, "
        "sum(value) AS total, min(value) AS vmin, max(value) AS vmax, min(ts) AS first_ts, "
        f"max(ts) AS last_ts FROM {source} GROUP BY 1, 2) AS g "
        f"JOIN {source} AS f ON f.series_id = g.series_id AND f.ts = g.first_ts "
        f"JOIN {source} AS l ON l.series_id = g.series_id AND l.ts = g.last_ts "
        f"WHERE true ORDER BY 1, 2 {rollup_merge(table, least=least, greatest=greatest)}"
    )


# Late numbers (packed.py): the packing lock, shared with other late writers, then the staged
# readings older than $1 whose (series, ts) is packed already removed (first write wins).
LATE_LOCK_SQL = "SELECT pg_advisory_xact_lock_shared($1)"
DROP_PACKED_SQL = (
    "DELETE FROM stage_ts_num AS s USING (SELECT p.series_id, p.block + u.o AS ts "
    "FROM ts_num_packed AS p, unnest(p.offs) AS u (o) "
    "WHERE (p.series_id, p.block) IN (SELECT DISTINCT series_id, "
    f"{floor_sql('ts', BLOCK_MS)} FROM stage_ts_num WHERE ts < $1)) AS k "
    "WHERE s.series_id = k.series_id AND s.ts = k.ts"
)

# A batch's new numbers, logged from the writer's own arrays (ids, stamps, values).
LOG_SQL = "INSERT INTO ts_rollup_pending (series_ids, stamps, vals) VALUES ($1, $2, $3)"


def stage_sql(kind: Kind) -> str:
    """The session's staging table of a kind, which the batch's rows are copied into (binary
    COPY: no per-value parsing) and which every commit empties."""
    return (
        f"CREATE TEMP TABLE IF NOT EXISTS {stage_name(kind)} (series_id integer NOT NULL, "
        f"ts bigint NOT NULL, value {STAGE_TYPES[kind][1]} NOT NULL) ON COMMIT DELETE ROWS"
    )


def stage_name(kind: Kind) -> str:
    """The name of a kind's staging table."""
    return f"stage_{VALUE_TABLES[kind].name}"


def insert_sql(kind: Kind) -> str:
    """Insert the staged rows of one kind ($1: how many), first copy of a (series, ts)
    winning; returns how many were new, and for kinds other than numbers which ones when
    some were not (numbers: `new_numbers_sql`).

    Numbers are logged for `apply_sql` when all were new (the usual case, logged straight
    from the stage); other kinds are merged into latest at once.
    """
    table = VALUE_TABLES[kind].name
    stage = stage_name(kind)
    returning = "1" if kind is Kind.NUMBER else "series_id, ts, value"
    parts = [
        f"WITH ins AS (INSERT INTO {table} (series_id, ts, value) "
        # Sorted by key: concurrent writers wait for each other's rows in one order. The
        # stage holds this batch alone, copied in order, so ctid order is batch order.
        f"SELECT series_id, ts, value FROM {stage} ORDER BY series_id, ts, ctid "
        f"ON CONFLICT DO NOTHING RETURNING {returning})"
    ]
    if kind is Kind.NUMBER:
        parts.append(
            ", n AS (SELECT count(*) AS count FROM ins), "
            "log AS (INSERT INTO ts_rollup_pending (series_ids, stamps, vals) "
            f"SELECT array_agg(series_id), array_agg(ts), array_agg(value) FROM {stage} "
            "WHERE (SELECT count FROM n) = $1 HAVING count(*) > 0) "
            "SELECT count, NULL::integer[], NULL::bigint[] FROM n"
        )
        return "".join(parts)
    parts.append(
        f", latest AS (INSERT INTO ts_latest (series_id, ts, {LATEST_COLUMN[kind]}) "
        "SELECT DISTINCT ON (series_id) series_id, ts, value FROM ins "
        f"ORDER BY series_id, ts DESC ON CONFLICT (series_id) DO UPDATE SET {LATEST_UPDATE})"
        " SELECT count(*), CASE WHEN count(*) < $1 THEN array_agg(series_id) END, "
        "CASE WHEN count(*) < $1 THEN array_agg(ts) END FROM ins"
    )
    return "".join(parts)


def new_numbers_sql() -> str:
    """After `insert_sql` found duplicates among the staged numbers: log the new ones (the
    rows this transaction wrote, by xmin; it has no subtransactions) and return them."""
    stage = stage_name(Kind.NUMBER)
    return (
        "WITH new AS (SELECT DISTINCT n.series_id, n.ts, n.value "
        f"FROM {stage} AS s JOIN ts_num AS n ON n.series_id = s.series_id AND n.ts = s.ts "
        "WHERE n.xmin = pg_current_xact_id()::xid), "
        "log AS (INSERT INTO ts_rollup_pending (series_ids, stamps, vals) "
        "SELECT array_agg(series_id), array_agg(ts), array_agg(value) FROM new "
        "HAVING count(*) > 0) "
        "SELECT coalesce(array_agg(series_id), '{}'), coalesce(array_agg(ts), '{}') FROM new"
    )


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
                f"SELECT series_id, {floor_sql('ts', width)} AS bucket, count(*) AS cnt, "
                "sum(value) AS total, min(value) AS vmin, max(value) AS vmax, "
                "min(ts) AS first_ts, (min(ARRAY[ts, value]))[2] AS vfirst, "
                "max(ts) AS last_ts, (max(ARRAY[ts, value]))[2] AS vlast FROM new GROUP BY 1, 2"
            )
        else:
            grouped = (
                f"SELECT series_id, {floor_sql('bucket', width)} AS bucket, sum(cnt) AS cnt, "
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
