"""Account mails (verification, reset, invitation, notices): sent after the commit, off the
request, through the SMTP settings the notifications use.

Sending in the background keeps the answer's time the same whether or not a mail goes out
(no enumeration by timing) and the request free of a slow SMTP server. A mail is tried a few
times; one lost to a crash or a long SMTP outage is asked for again (the pages offer it), so
these mails need no outbox of their own.

Development: with FLEETCORE_ENVIRONMENT=development (what `make run` sets) and no
FLEETCORE_SMTP_HOST, the mail is not sent but its link is logged (event account_mail_link),
so a developer can follow it from the console. In any other environment a link is never
logged: it is a credential, and production logs are read by more people than its owner.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from email.message import EmailMessage

import structlog

from fleetcore.config import Settings
from fleetcore.notifications.senders import send_email

log = structlog.get_logger(__name__)
ATTEMPTS = 3
RETRY_DELAY_S = 2.0


@dataclass(frozen=True, slots=True)
class AccountMail:
    """One mail: who, what, and the link it carries (if any)."""

    to: str
    subject: str
    body: str
    kind: str  # signup, signup_taken, reset, invite, invite_taken
    link: str | None = None


class Mailer:
    """Sends account mails in background tasks; `aclose` waits for those under way."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def logs_links(self) -> bool:
        """Development without SMTP: links are logged instead of sent."""
        return self._settings.environment == "development" and not self._settings.smtp_host

    def send(self, mail: AccountMail) -> None:
        """Queue the mail; returns at once (call after the commit that made its link)."""
        if self.logs_links:
            log.warning("account_mail_link", kind=mail.kind, to=mail.to, link=mail.link)
            return
        if not self._settings.smtp_host:
            log.warning("account_mail_not_sent", kind=mail.kind, reason="no FLEETCORE_SMTP_HOST")
            return
        task = asyncio.create_task(self._deliver(mail))
        self._tasks.add(task)  # a reference, or the task may be collected mid-send
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, mail: AccountMail) -> None:
        message = EmailMessage()
        message["From"] = self._settings.smtp_from
        message["To"] = mail.to
        message["Subject"] = f"[Fleetcore] {mail.subject}"
        message["X-Fleetcore-Event"] = f"account.{mail.kind}"
        message.set_content(mail.body)
        for attempt in range(1, ATTEMPTS + 1):
            outcome = await send_email(self._settings, message)
            if outcome.delivered:
                log.info("account_mail_sent", kind=mail.kind)
                return
            if outcome.final or attempt == ATTEMPTS:
                log.warning("account_mail_failed", kind=mail.kind, error=outcome.error)
                return
            await asyncio.sleep(RETRY_DELAY_S * attempt)

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """Let mails under way finish (bounded), when the app stops."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)
