"""What is metered: the kinds of usage, and which of them are counters or daily levels."""

from __future__ import annotations

from enum import StrEnum


class UsageKind(StrEnum):
    """A metered quantity (the meter's hot-path kinds, and what the daily jobs record)."""

    MESSAGES = "messages"  # device messages ingested (label: transport)
    READINGS = "readings"  # readings stored (label: transport)
    API_REQUESTS = "api_requests"
    WS_MINUTES = "ws_minutes"
    NOTIFICATIONS = "notifications"  # delivered (label: channel type)
    COMMANDS = "commands"  # sent to a device (label: channel)
    # Not counted on the hot path: derived or snapshotted.
    DEVICES_ACTIVE = "devices_active"  # distinct devices that sent anything that day
    STORAGE_ROWS = "storage_rows"  # telemetry rows stored (daily snapshot)
    STORAGE_BYTES = "storage_bytes"  # telemetry bytes (daily snapshot; estimated on PostgreSQL)
    MEDIA_BYTES = "media_bytes"  # media bytes (daily snapshot)


# Levels, not flows: a month is its largest day, never the sum of its days.
LEVELS = frozenset({UsageKind.STORAGE_ROWS, UsageKind.STORAGE_BYTES, UsageKind.MEDIA_BYTES})

# Readings the platform writes itself (imports, archive restores, DEX audit series,
# analytics health): their new readings are counted (label: the transport), but they are no
# device message and no sign of a device's activity.
INTERNAL_TRANSPORTS = frozenset({"import", "restore", "dex", "analytics"})
