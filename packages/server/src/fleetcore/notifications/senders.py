"""Sending one delivery: a signed webhook POST or an email. Each answers an Outcome."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import httpx
import orjson

from fleetcore import __version__
from fleetcore.config import Settings
from fleetcore.notifications.crypto import signature
from fleetcore.notifications.egress import ForbiddenAddress

_RETRYABLE_4XX = frozenset({408, 429})
# Of a webhook's answer only the status counts; the body is read (so that the connection can
# be reused) up to this much, raw (never decompressed), and the rest left unread.
MAX_RESPONSE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt went: delivered, or an error that may be retried or is final."""

    delivered: bool
    error: str | None = None
    final: bool = False  # no point retrying (e.g. a 4xx answer)


DELIVERED = Outcome(True)


def webhook_headers(
    *, event: str, delivery_id: str, secret: str | None, body: bytes
) -> dict[str, str]:
    """The headers of a webhook POST; the signature covers the exact body bytes."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"Fleetcore/{__version__}",
        "X-Fleetcore-Event": event,
        "X-Fleetcore-Delivery": delivery_id,
    }
    if secret is not None:
        headers["X-Fleetcore-Signature"] = signature(secret, body)
    return headers


async def send_webhook(
    client: httpx.AsyncClient,
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    deadline_s: float,
) -> Outcome:
    """POST the body within `deadline_s` (connection, request and answer together: httpx's
    timeouts are per read, and a receiver trickling a byte at a time never trips them);
    2xx delivered, 4xx (but 408/429) final, anything else retried."""
    status: int | None = None
    try:
        async with (
            asyncio.timeout(deadline_s),
            client.stream("POST", url, content=body, headers=headers) as response,
        ):
            status = response.status_code
            await _drain(response, MAX_RESPONSE_BYTES)
    except (TimeoutError, httpx.HTTPError) as error:
        if status is None:
            return _failure(error, deadline_s)
        # With the status in, an answer cut short or slow to end changes nothing.
    assert status is not None  # no exception means the answer came
    if 200 <= status < 300:
        return DELIVERED
    final = 300 <= status < 500 and status not in _RETRYABLE_4XX
    return Outcome(False, f"HTTP {status}", final=final)


def _failure(error: Exception, deadline_s: float) -> Outcome:
    """The outcome of a send that got no answer."""
    if isinstance(error, TimeoutError):
        return Outcome(False, f"deadline exceeded ({deadline_s:g} s)")
    if isinstance(error, httpx.TimeoutException):
        return Outcome(False, "timed out")
    if isinstance(error.__cause__, ForbiddenAddress):  # retrying will not change that
        return Outcome(False, f"refused: {error.__cause__}"[:500], final=True)
    return Outcome(False, f"{type(error).__name__}: {error}"[:500])


async def _drain(response: httpx.Response, limit: int) -> None:
    """Read at most `limit` bytes of the answer; a longer one is closed unread."""
    read = 0
    async for chunk in response.aiter_raw():
        read += len(chunk)
        if read > limit:
            return


def email_message(
    settings: Settings, recipients: list[str], *, delivery_id: str, body: dict[str, Any]
) -> EmailMessage:
    """A plain-text email of an event; its Message-ID is stable per delivery."""
    alert = body.get("alert") or {}
    event = str(body.get("event", ""))
    what = event.removeprefix("alert.").replace("_", " ")
    if alert:
        subject = f"[Fleetcore] {alert.get('severity', '')} alert {what}: {alert.get('name', '')}"
    else:
        subject = f"[Fleetcore] {event}"
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message["Message-ID"] = f"<{delivery_id}@fleetcore>"
    message["X-Fleetcore-Event"] = event
    message["X-Fleetcore-Delivery"] = delivery_id
    lines = [subject.removeprefix("[Fleetcore] "), ""]
    if alert:
        for key in ("device_id", "status", "count", "opened_at", "cleared_at", "clear_reason"):
            if alert.get(key) is not None:
                lines.append(f"{key}: {alert[key]}")
        lines.append("")
    lines.append(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
    message.set_content("\n".join(lines))
    return message


async def send_email(settings: Settings, message: EmailMessage) -> Outcome:
    """Hand the message to the SMTP server; 5xx answers are final, the rest retried."""
    if not settings.smtp_host:
        return Outcome(False, "SMTP is not configured (FLEETCORE_SMTP_HOST)", final=True)
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    deadline_s = settings.notification_timeout_s
    try:
        async with asyncio.timeout(deadline_s):  # aiosmtplib's timeout is per operation
            await aiosmtplib.send(
                message,
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                start_tls=settings.smtp_starttls,
                username=settings.smtp_user,
                password=password,
                timeout=deadline_s,
            )
    except aiosmtplib.SMTPRecipientsRefused as error:
        return Outcome(False, f"recipients refused: {error}"[:500], final=True)
    except aiosmtplib.SMTPResponseException as error:
        return Outcome(False, f"SMTP {error.code}: {error.message}"[:500], final=error.code >= 500)
    except aiosmtplib.SMTPException as error:  # its own timeouts included
        return Outcome(False, f"{type(error).__name__}: {error}"[:500])
    except TimeoutError:  # before OSError, of which it is one
        return Outcome(False, f"deadline exceeded ({deadline_s:g} s)")
    except OSError as error:
        return Outcome(False, f"{type(error).__name__}: {error}"[:500])
    return DELIVERED
