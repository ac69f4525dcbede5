"""Security headers on every HTTP response: a strict Content-Security-Policy and friends.

The dashboard's pages run only scripts and styles served by Fleetcore itself (no inline
script, no CDN), so the policy allows 'self' and nothing else; a script an attacker manages
to inject into a page does not run. Pages may not be framed (clickjacking). In production,
browsers are told to use HTTPS only (HSTS), and the session cookie is Secure (auth/pages.py).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",  # Swagger UI's icons are data: URLs
        "font-src 'self'",
        "connect-src 'self'",  # fetch, htmx and the live WebSocket (same origin)
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
# The ReDoc page (/api/redoc) only: ReDoc adds its styles at run time and runs its search in
# a worker made from a blob: URL. Scripts are still Fleetcore's own files only.
REDOC_POLICY = (
    CONTENT_SECURITY_POLICY.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
    + "; worker-src 'self' blob:"
)
HSTS = "max-age=63072000; includeSubDomains"


def security_headers(*, hsts: bool) -> list[tuple[bytes, bytes]]:
    """The headers every answer carries (unless it sets its own), as ASGI header pairs."""
    headers = [
        (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"same-origin"),
        (b"cross-origin-opener-policy", b"same-origin"),
    ]
    if hsts:
        headers.append((b"strict-transport-security", HSTS.encode()))
    return headers


def with_security_headers(
    own: list[tuple[bytes, bytes]], headers: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """`own` (a response's headers) plus those of `headers` it does not set itself."""
    present = {name.lower() for name, _ in own}
    return own + [h for h in headers if h[0] not in present]


class SecurityHeadersMiddleware:
    """Adds the headers to every response that does not set its own."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.headers = security_headers(hsts=hsts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                own = list(message.get("headers", ()))
                message = {**message, "headers": with_security_headers(own, self.headers)}
            await send(message)

        await self.app(scope, receive, send_with_headers)
