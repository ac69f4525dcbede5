"""Who may read /metrics: the holder of FLEETCORE_METRICS_TOKEN when one is set; otherwise
anyone, except in production, where only loopback clients (a local Prometheus or agent).

The metrics name routes, tenants' traffic volumes and the process's internals; they are
not for the internet. Behind a reverse proxy every request comes from loopback unless the
proxy sends X-Forwarded-For (trusted from FLEETCORE_FORWARDED_ALLOW_IPS), so set a token.
"""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import Request

from fleetcore.deps import SettingsDep
from fleetcore.errors import Forbidden, Unauthorized


def _bearer(request: Request) -> bytes:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return credentials.strip().encode() if scheme.lower() == "bearer" else b""


def _from_loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:  # not an address (a unix socket, a test transport's name)
        return False


def require_metrics_access(request: Request, settings: SettingsDep) -> None:
    """Raise unless this request may read /metrics (see the module's docstring)."""
    token = settings.metrics_token
    if token is not None:
        # Constant time: the comparison must not tell how much of a guess was right.
        if not hmac.compare_digest(_bearer(request), token.get_secret_value().encode()):
            raise Unauthorized(
                "/metrics needs Authorization: Bearer <FLEETCORE_METRICS_TOKEN>",
                code="METRICS_TOKEN_REQUIRED",
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        return
    if settings.environment == "production" and not _from_loopback(request):
        raise Forbidden(
            "/metrics answers loopback clients only in production; "
            "set FLEETCORE_METRICS_TOKEN to read it from elsewhere",
            code="METRICS_LOOPBACK_ONLY",
        )
