"""Reading account mails from the test SMTP server and following their links."""

from __future__ import annotations

import re
from email.message import Message
from urllib.parse import parse_qs, urlsplit

from tests.support.smtp import Mailbox
from tests.support.wait import wait_until

LINK = re.compile(r"https?://\S+")


def mails(mailbox: Mailbox, to: str, kind: str | None = None) -> list[Message]:
    """The mails to an address (of one kind: signup, reset, invite, ...), oldest first."""
    found = [m for rcpt, m in mailbox.mails if to in rcpt]
    if kind is not None:
        found = [m for m in found if m["X-Fleetcore-Event"] == f"account.{kind}"]
    return found


async def wait_mail(mailbox: Mailbox, to: str, kind: str, *, count: int = 1) -> Message:
    """The `count`-th mail of `kind` to `to`, once it has arrived."""
    await wait_until(lambda: len(mails(mailbox, to, kind)) >= count)
    return mails(mailbox, to, kind)[count - 1]


def body_of(message: Message) -> str:
    """The plain-text body."""
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


def link_of(message: Message) -> str:
    """The first link in the mail carrying a token."""
    links = [u for u in LINK.findall(body_of(message)) if "token=" in u]
    assert links, body_of(message)
    return links[0]


def token_of(message: Message) -> str:
    """The token of the mail's link."""
    return parse_qs(urlsplit(link_of(message)).query)["token"][0]
