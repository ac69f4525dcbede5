"""`fleetcore dex parse FILE [--json]`: tables, JSON, and the exit status scripts sort by."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from typer.testing import CliRunner

from fleetcore.cli import app
from fleetcore_protocol.dex import Counter
from fleetcore_protocol.dex.writer import MachineAudit, Selection, write
from tests.support import forkserver
from tests.support.env import FLEETCORE, fleetcore_env

CORPUS = Path(__file__).parent / "data" / "dex"


def _clean_file(tmp_path: Path) -> Path:
    audit = MachineAudit(
        serial="FLC0042",
        model="Snack 5",
        currency="EUR",
        selections=[
            Selection(
                "11",
                Decimal("1.20"),
                Counter(Decimal("24.00"), 20, Decimal("3.60"), 3),
                name="Water",
            ),
            Selection("12", Decimal("2.50"), Counter(Decimal("5.00"), 2, Decimal("0.00"), 0)),
        ],
        read_at=datetime(2026, 3, 1, 9, 30),
        reads=7,
        reset_mode="AUTO",
    )
    path = tmp_path / "clean.dex"
    path.write_bytes(write(audit))
    return path


def test_clean_file_as_tables(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["dex", "parse", str(_clean_file(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "FLC0042" in result.stdout
    assert "Water" in result.stdout
    assert "no warnings" in result.stdout
    assert "msb_first" in result.stdout


def test_clean_file_as_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["dex", "parse", str(_clean_file(tmp_path)), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["is_dex"] is True
    assert document["warnings"] == []
    (audit,) = document["audits"]
    assert audit["machine"]["serial"] == "FLC0042"
    assert audit["currency"] == {"decimal_places": 2, "numeric_code": "1978", "alpha_code": "EUR"}
    assert audit["paid"] == {
        "value_init": "29.00",
        "count_init": 22,
        "value_reset": "3.60",
        "count_reset": 3,
    }
    assert audit["products"][0]["price"] == "1.20"  # Decimal as a string, never a float
    assert audit["read_time"] == "2026-03-01T09:30:00"
    assert audit["crc"]["matched"] == "msb_first"
    assert audit["damaged"] is False
    assert audit["warnings"] == []


def test_corpus_file_with_warnings() -> None:
    path = CORPUS / "TMDroid__dex-parse__test2.dex"
    tables = CliRunner().invoke(app, ["dex", "parse", str(path)])
    assert tables.exit_code == 1
    assert "TEXT_BEFORE_DXS" in tables.stdout
    assert "SEGMENT_COUNT" in tables.stdout
    result = CliRunner().invoke(app, ["dex", "parse", str(path), "--json"])
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert [w["code"] for w in document["warnings"]] == ["TEXT_BEFORE_DXS"]
    (audit,) = document["audits"]
    assert sorted(w["code"] for w in audit["warnings"]) == [
        "BAD_ELEMENT",
        "CRC_MISSING",
        "SEGMENT_COUNT",
    ]
    assert audit["products"][0]["sold_out"]["date"] == "2012-03-01"
    assert audit["cash"]["bills_whole_units"] is True


def test_truncated_file_is_damaged_in_json() -> None:
    path = CORPUS / "mkrasselt1__php-evadts-parser__animo2.eva_dts"
    result = CliRunner().invoke(app, ["dex", "parse", str(path), "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["audits"][0]["damaged"] is True


def test_not_dex(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("shopping list\nmilk\n")
    result = CliRunner().invoke(app, ["dex", "parse", str(path), "--json"])
    assert result.exit_code == 2
    assert json.loads(result.stdout)["is_dex"] is False
    assert "not a DEX audit file" in result.stderr


def test_unreadable_file_as_a_real_process(tmp_path: Path) -> None:
    missing = tmp_path / "missing.dex"
    result = forkserver.run(
        [FLEETCORE, "dex", "parse", str(missing)],
        capture_output=True,
        text=True,
        env=fleetcore_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "cannot read" in result.stderr
