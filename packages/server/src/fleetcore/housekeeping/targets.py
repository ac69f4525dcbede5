"""What housekeeping deletes: one target per growing table, its age rule and whose rows.

Each target names the setting holding its default days (0 keeps rows forever) and a SQL
condition on `:cutoff` (a UTC datetime, or epoch ms for `ms` targets). A target with an
`org` condition is applied one organization at a time (`:org`), through an index that leads
with the organization or its devices, so a chunk is a short range scan; `overridable`
targets honour the organization's own days (fleetcore.housekeeping.models). `orphans` is the
condition for rows of no organization (refused before authentication, platform actions):
they follow the default. A target without `org` is platform-wide.

Only finished rows are ever targets: pending deliveries, open commands and unexpired
credentials are never deleted, whatever their age.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from fleetcore.commands.models import OPEN
from fleetcore.config import Settings
from fleetcore.notifications.models import DeliveryStatus

_DEVICES_OF_ORG = "device_id IN (SELECT id FROM devices WHERE organization_id = :org)"
_OPEN_COMMANDS = ", ".join(f"'{status.value}'" for status in OPEN)
_FINISHED_DELIVERIES = f"'{DeliveryStatus.DELIVERED}', '{DeliveryStatus.FAILED}'"


@dataclass(frozen=True, slots=True)
class Target:
    """One table's retention rule (see the module docstring)."""

    table: str
    setting: str  # Settings attribute: default days, 0 = forever
    age: str  # SQL condition on :cutoff
    org: str | None = None  # SQL condition on :org; None = platform-wide
    orphans: str | None = None  # rows of no organization, by the default days
    overridable: bool = False  # an organization may set its own days
    min_days: int = 1  # the shortest an organization may choose (0, forever, is always allowed)
    ms: bool = False  # :cutoff is epoch milliseconds, not a datetime

    def default_days(self, settings: Settings) -> int:
        """The platform default from the settings."""
        return int(getattr(settings, self.setting))


def credential_grace(settings: Settings) -> timedelta:
    """How long after its refresh token expires a session row may still vouch for an access
    token: the longest an access token lives (a browser's remember-me session)."""
    return timedelta(
        seconds=max(
            settings.access_token_ttl_s, settings.session_cookie_ttl_s, settings.remember_me_ttl_s
        )
    )


TARGETS: tuple[Target, ...] = (
    Target(
        "audit_events",
        "audit_retention_days",
        "ts < :cutoff",
        org="organization_id = :org",
        orphans="organization_id IS NULL",
        overridable=True,
        # An admin must not be able to erase the trail of their own change the next day.
        min_days=30,
    ),
    Target(
        "device_events",
        "device_events_retention_days",
        "ts < :cutoff",
        org=_DEVICES_OF_ORG,  # the (device_id, ts) index
        overridable=True,
    ),
    Target(
        "dead_letters",
        "dead_letters_retention_days",
        "received_at < :cutoff",
        org="organization_id = :org",
        orphans="organization_id IS NULL",
        overridable=True,
    ),
    Target(
        "device_status_history",
        "status_history_retention_days",
        "at < :cutoff",
        org="organization_id = :org",
    ),
    Target(
        "notification_deliveries",
        "notification_deliveries_retention_days",
        f"status IN ({_FINISHED_DELIVERIES}) AND created_at < :cutoff",
        # the (channel_id, created_at) index
        org="channel_id IN (SELECT id FROM notification_channels WHERE organization_id = :org)",
    ),
    Target(
        "notifications",
        "notifications_retention_days",
        "created_at < :cutoff",
        org="organization_id = :org",
    ),
    Target(
        "device_commands",
        "commands_retention_days",
        f"status NOT IN ({_OPEN_COMMANDS}) AND created_at < :cutoff",
        org=_DEVICES_OF_ORG,  # the (device_id, status, created_at) index
    ),
    Target(
        "analytics_findings",
        "analytics_findings_retention_days",
        "ts < :cutoff",
        org="organization_id = :org",
        ms=True,
    ),
    # Credentials: platform-wide, by expiry or revocation (cutoff: fleetcore.housekeeping.job).
    Target("refresh_tokens", "refresh_tokens_retention_days", "expires_at < :cutoff"),
    Target(
        "device_credentials",
        "device_credentials_retention_days",
        "revoked_at IS NOT NULL AND revoked_at < :cutoff",
    ),
    Target(
        "broker_credential_outbox",
        "broker_outbox_retention_days",
        "done_at IS NOT NULL AND done_at < :cutoff",
    ),
    # Emailed links (accounts): only a hash of each, useless once expired, used or not.
    Target("account_links", "account_links_retention_days", "expires_at < :cutoff"),
)
BY_TABLE = {target.table: target for target in TARGETS}
OVERRIDABLE = tuple(target for target in TARGETS if target.overridable)
