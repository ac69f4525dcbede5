"""The ceiling: a bare FastAPI app, no middleware, no database.

/health answers what Fleetcore's does; POST /telemetry parses a JSON body and answers 202,
what a device-ingest endpoint does at the least (the ceiling single-reading ingest is
compared with, in the same run).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

app = FastAPI()


@app.get("/health")
async def health() -> dict[str, str]:
    """Same body shape as Fleetcore's."""
    return {"status": "ok", "version": "0"}


@app.post("/telemetry", status_code=202)
async def telemetry(request: Request) -> dict[str, Any]:
    """Parse the body; answer with a count like Fleetcore's ingest answer."""
    body = await request.json()
    return {"stored": len(body), "duplicates": 0, "rejected": [], "flagged": []}
