"""`fleetcore dex parse FILE`: what a DEX audit file says, as tables or JSON.

Exit status: 0 for a clean file, 1 when the parser warned, 2 when the file is not DEX at
all or cannot be read (the message on stderr), so scripts can sort files by it.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from fleetcore_protocol.dex import Audit, Counter, DexFile, DexWarning

dex_app = typer.Typer(help="DEX / EVA-DTS vending audit files.", no_args_is_help=True)

# A DEX audit is a few kilobytes; anything this big is not one, and reading it whole into
# memory to say so would be the wrong trade.
MAX_FILE_BYTES = 64 * 1024 * 1024


def _json_default(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)  # exact: never through float
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")


def as_json(dex: DexFile) -> dict[str, Any]:
    """The parsed file as JSON-ready data (Decimal and dates are encoded by `json.dumps`)."""
    audits = []
    for audit in dex.audits:
        item = dataclasses.asdict(audit)
        item["damaged"] = audit.damaged
        item["read_time"] = audit.read_time
        audits.append(item)
    return {
        "is_dex": dex.is_dex,
        "sender": dex.sender,
        "version": dex.version,
        "line_ends": dex.line_ends,
        "warnings": [dataclasses.asdict(w) for w in dex.warnings],
        "audits": audits,
    }


@dex_app.command("parse")
def parse_file(
    file: Annotated[Path, typer.Argument(help="the DEX file to read", show_default=False)],
    as_json_: Annotated[
        bool, typer.Option("--json", help="print JSON for scripts instead of tables")
    ] = False,
) -> None:
    """Parse a DEX/EVA-DTS audit file: exit 0 clean, 1 with warnings, 2 not DEX."""
    from fleetcore_protocol.dex import parse

    try:
        with file.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        typer.echo(f"fleetcore: cannot read {file}: {exc.strerror or exc}", err=True)
        raise typer.Exit(2) from None
    if len(data) > MAX_FILE_BYTES:
        typer.echo(f"fleetcore: {file} is larger than {MAX_FILE_BYTES} bytes", err=True)
        raise typer.Exit(2)
    dex = parse(data)
    if as_json_:
        typer.echo(json.dumps(as_json(dex), default=_json_default, indent=2))
    else:
        _print_tables(dex)
    if not dex.is_dex:
        typer.echo(f"fleetcore: {file} is not a DEX audit file", err=True)
        raise typer.Exit(2)
    raise typer.Exit(1 if dex.all_warnings else 0)


def _text(value: object) -> str:
    from rich.markup import escape

    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return escape(str(value))  # file text is data, never rich markup


def _print_tables(dex: DexFile) -> None:
    from rich.console import Console

    console = Console()
    console.print(
        f"DEX file: sender {_text(dex.sender) or '-'}, version {_text(dex.version) or '-'}, "
        f"line ends {_text(dex.line_ends) or '-'}, {len(dex.audits)} audit(s)"
    )
    for index, audit in enumerate(dex.audits, start=1):
        console.rule(f"Audit {index} (ST {_text(audit.control_number)}, line {audit.first_line})")
        _identity(console, audit)
        _totals(console, audit)
        _products(console, audit)
        _events(console, audit)
    _warnings(console, dex.all_warnings)


def _identity(console: Console, audit: Audit) -> None:
    from rich.table import Table

    table = Table(title="Identity")
    for column in ("block", "serial", "model", "revision", "asset"):
        table.add_column(column)
    for part in (audit.machine, *audit.parts):
        table.add_row(
            part.segment,
            _text(part.serial),
            _text(part.model),
            _text(part.revision),
            _text(part.asset),
        )
    console.print(table)
    currency = audit.currency
    crc = "no G85" if audit.crc is None else audit.crc.matched or "mismatch"
    console.print(
        f"currency {_text(currency.alpha_code or currency.numeric_code) or '-'} "
        f"({currency.decimal_places} decimal places), read at {_text(audit.read_time) or '-'}, "
        f"reset mode {audit.reset_mode or '-'}, CRC {crc}, "
        f"segments {audit.segment_count} (SE says {_text(audit.declared_segment_count) or '-'})"
    )


def _counter_cells(counter: Counter) -> list[str]:
    return [
        _text(counter.count_init),
        _text(counter.value_init),
        _text(counter.count_reset),
        _text(counter.value_reset),
    ]


def _totals(console: Console, audit: Audit) -> None:
    from rich.table import Table

    table = Table(title="Totals")
    for column in ("block", "count init", "value init", "count reset", "value reset"):
        table.add_column(column, justify="right")
    for name, counter in (
        ("VA1 paid", audit.paid),
        ("VA2 test", audit.test),
        ("VA3 free", audit.free),
        ("CA2 cash", audit.cash_sales),
        ("DA2 cashless 1", audit.cashless1),
        ("DB2 cashless 2", audit.cashless2),
    ):
        table.add_row(name, *_counter_cells(counter))
    console.print(table)


def _products(console: Console, audit: Audit) -> None:
    from rich.table import Table

    table = Table(title=f"Products ({len(audit.products)})")
    for column in ("selection", "name", "price", "paid init", "value init", "paid reset"):
        table.add_column(column)
    for column in ("value reset", "test", "free", "sold out"):
        table.add_column(column)
    for p in audit.products:
        sold_out = p.sold_out and p.sold_out.date
        table.add_row(
            _text(p.selection),
            _text(p.name),
            _text(p.price),
            *_counter_cells(p.paid),
            _text(p.test.count_reset if p.test.count_reset is not None else p.test.count_init),
            _text(p.free.count_reset if p.free.count_reset is not None else p.free.count_init),
            _text(sold_out),
        )
    console.print(table)


def _events(console: Console, audit: Audit) -> None:
    from rich.table import Table

    if not audit.events:
        return
    table = Table(title=f"Events ({len(audit.events)})")
    for column in ("block", "code", "at", "minutes", "count reset", "count init", "active"):
        table.add_column(column)
    for e in audit.events:
        table.add_row(
            e.segment,
            _text(e.code),
            _text(e.at),
            _text(e.duration_minutes),
            _text(e.count_reset),
            _text(e.count_init),
            _text(e.active),
        )
    console.print(table)


def _warnings(console: Console, warnings: tuple[DexWarning, ...]) -> None:
    from rich.table import Table

    if not warnings:
        console.print("no warnings")
        return
    table = Table(title=f"Warnings ({len(warnings)})")
    for column in ("code", "line", "segment", "message"):
        table.add_column(column)
    for w in warnings:
        table.add_row(str(w.code), _text(w.line), _text(w.segment), _text(w.message))
    console.print(table)
