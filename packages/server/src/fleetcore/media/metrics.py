"""Prometheus metrics of media: bytes written and removed, uploads refused by reason."""

from __future__ import annotations

from prometheus_client import Counter

STORED_BYTES = Counter(
    "fleetcore_media_stored_bytes_total",
    "Bytes written to the media store, by kind (image, thumbnail).",
    ["kind"],
)
STORED_FILES = Counter(
    "fleetcore_media_stored_total", "Images stored (each with its thumbnail).", ["path"]
)
REFUSED = Counter(
    "fleetcore_media_refused_total",
    "Uploads refused, by reason (the error code: media_too_large, media_corrupt, ...).",
    ["reason"],
)
DELETED = Counter(
    "fleetcore_media_deleted_total",
    "Media removed, by cause (retention, device, expired, orphan, request).",
    ["cause"],
)
