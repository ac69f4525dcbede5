"""HTTP endpoints an external broker calls: EMQX 5 (authentication, authorization) and
mosquitto-go-auth's HTTP backend (user, superuser, acl). Machine-to-machine: the shared
secret FLEETCORE_BROKER_AUTH_SECRET authenticates the broker (no cookie, so no CSRF), and
without it the endpoints do not exist (404)."""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPBasic, HTTPBearer

from fleetcore.broker_auth.schemas import (
    EmqxAuthnIn,
    EmqxAuthnOut,
    EmqxAuthzIn,
    EmqxAuthzOut,
    GoAuthOut,
)
from fleetcore.broker_auth.service import Action, BrokerAuth
from fleetcore.deps import DatabaseDep, SettingsDep
from fleetcore.errors import Forbidden, Invalid, NotFound, Unauthorized

# Documented schemes; the header itself is read below (either may carry the secret).
_bearer = HTTPBearer(auto_error=False, scheme_name="BrokerSecret", description="the secret")
_basic = HTTPBasic(auto_error=False, scheme_name="BrokerSecretBasic", description="any user")


def _sent_secret(request: Request) -> bytes:
    """Authorization: Bearer <secret>, or Basic with the secret as password (go-auth sends
    no headers of its own, but Go sends a URL's user:secret@ as Basic)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip().encode()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return b""
        return decoded.partition(b":")[2]
    return b""


def require_broker(
    request: Request,
    settings: SettingsDep,
    _documented: Annotated[Any, Depends(_bearer)] = None,
    _documented_basic: Annotated[Any, Depends(_basic)] = None,
) -> None:
    """404 when no secret is configured; 401 unless the request carries it."""
    secret = settings.broker_auth_secret
    if secret is None:
        raise NotFound("broker authentication is not enabled", code="NOT_FOUND")
    # Constant time: the comparison must not tell how much of a guess was right.
    if not hmac.compare_digest(_sent_secret(request), secret.get_secret_value().encode()):
        raise Unauthorized(
            "send FLEETCORE_BROKER_AUTH_SECRET as Authorization: Bearer",
            code="BROKER_SECRET_REQUIRED",
            headers={"WWW-Authenticate": 'Bearer realm="broker"'},
        )


def broker_auth(request: Request, database: DatabaseDep, settings: SettingsDep) -> BrokerAuth:
    """The application's BrokerAuth (made on first use)."""
    found: BrokerAuth | None = getattr(request.app.state, "broker_auth", None)
    if found is None:
        found = request.app.state.broker_auth = BrokerAuth(database, settings)
    return found


BrokerAuthDep = Annotated[BrokerAuth, Depends(broker_auth)]
router = APIRouter(prefix="/api/v1/broker", tags=["broker"], dependencies=[Depends(require_broker)])


@router.post("/emqx/authn")
async def emqx_authenticate(body: EmqxAuthnIn, auth: BrokerAuthDep) -> EmqxAuthnOut:
    """EMQX 5 HTTP authentication: allow a device, the provisioning or the platform client."""
    who = await auth.authenticate(
        username=body.username, password=body.password, clientid=body.clientid, peer=body.peerhost
    )
    if who is None:
        return EmqxAuthnOut(result="deny")
    attrs = {"device_id": who.device_id} if who.device_id else {"role": who.kind}
    return EmqxAuthnOut(result="allow", client_attrs=attrs)


@router.post("/emqx/authz")
async def emqx_authorize(body: EmqxAuthzIn, auth: BrokerAuthDep) -> EmqxAuthzOut:
    """EMQX 5 HTTP authorization: a device only on its own topics."""
    allowed = await auth.authorize(username=body.username, topic=body.topic, action=body.action)
    return EmqxAuthzOut(result="allow" if allowed else "deny")


# -- mosquitto-go-auth: JSON (its default) or form fields; 200 allows, 403 refuses ---------

_GO_AUTH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            media: {
                "schema": {
                    "type": "object",
                    "properties": {
                        "username": {"type": "string", "maxLength": 512},
                        "password": {"type": "string", "maxLength": 512},
                        "clientid": {"type": "string", "maxLength": 512},
                        "topic": {"type": "string", "maxLength": 65535},
                        "acc": {"type": "integer", "enum": [1, 2, 3, 4]},
                    },
                }
            }
            for media in ("application/json", "application/x-www-form-urlencoded")
        },
    }
}
_ACCESS: dict[int, tuple[Action, ...]] = {
    1: ("subscribe",),  # read: a message delivered to the client
    2: ("publish",),
    3: ("subscribe", "publish"),
    4: ("subscribe",),
}


async def _go_auth_fields(request: Request) -> dict[str, str]:
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        async with request.form(max_files=0, max_fields=8) as form:
            return {k: v for k, v in form.items() if isinstance(v, str)}
    try:
        data = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise Invalid("send a JSON object or form fields", code="INVALID_BODY") from None
    if not isinstance(data, dict):
        raise Invalid("send a JSON object or form fields", code="INVALID_BODY")
    return {k: str(v) for k, v in data.items() if isinstance(v, str | int) and len(str(v)) < 65536}


GoAuthFields = Annotated[dict[str, str], Depends(_go_auth_fields)]


def _denied() -> Forbidden:
    return Forbidden("not allowed", code="BROKER_DENIED")


@router.post("/go-auth/user", openapi_extra=_GO_AUTH_BODY)
async def go_auth_user(fields: GoAuthFields, auth: BrokerAuthDep) -> GoAuthOut:
    """mosquitto-go-auth user check: 200 lets the client in, 403 refuses it."""
    who = await auth.authenticate(
        username=fields.get("username", ""),
        password=fields.get("password", ""),
        clientid=fields.get("clientid", ""),
        peer=None,  # go-auth does not send the client's address
    )
    if who is None:
        raise _denied()
    return GoAuthOut(ok=True)


@router.post("/go-auth/superuser", openapi_extra=_GO_AUTH_BODY)
async def go_auth_superuser(fields: GoAuthFields) -> GoAuthOut:
    """No superusers: every client, the platform's too, goes through the ACL (403)."""
    raise _denied()


@router.post("/go-auth/acl", openapi_extra=_GO_AUTH_BODY)
async def go_auth_acl(fields: GoAuthFields, auth: BrokerAuthDep) -> GoAuthOut:
    """mosquitto-go-auth ACL check (acc 1 read, 2 write, 3 both, 4 subscribe)."""
    actions = _ACCESS.get(int(fields.get("acc", "0")) if fields.get("acc", "").isdigit() else 0)
    topic = fields.get("topic", "")
    if not actions or not topic:
        raise Invalid("acc (1-4) and topic are required", code="INVALID_BODY")
    for action in actions:
        if not await auth.authorize(
            username=fields.get("username", ""), topic=topic, action=action
        ):
            raise _denied()
    return GoAuthOut(ok=True)
