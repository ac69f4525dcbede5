"""The ceiling: a bare FastAPI app answering /health, no middleware, no database."""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()


@app.get("/health")
async def health() -> dict[str, str]:
    """Same body shape as Fleetcore's."""
    return {"status": "ok", "version": "0"}
