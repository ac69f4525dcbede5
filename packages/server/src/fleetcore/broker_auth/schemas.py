"""What EMQX 5 and mosquitto-go-auth send and expect back."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

_TEXT = 512  # MQTT strings are longer in theory; no credential or client id of ours is


class EmqxAuthnIn(BaseModel):
    """EMQX's HTTP authenticator body (a template of ${username}, ${password}, ...)."""

    username: str = Field("", max_length=_TEXT)
    password: str = Field("", max_length=_TEXT)
    clientid: str = Field("", max_length=_TEXT)
    peerhost: str | None = Field(None, max_length=64, description="the client's address")


class EmqxAuthnOut(BaseModel):
    """allow or deny (never ignore: Fleetcore decides for every client it is asked about)."""

    result: Literal["allow", "deny"]
    is_superuser: bool = False
    client_attrs: dict[str, str] = Field(default_factory=dict)


class EmqxAuthzIn(BaseModel):
    """EMQX's HTTP authorization source body (${username}, ${clientid}, ${topic}, ...)."""

    username: str = Field("", max_length=_TEXT)
    clientid: str = Field("", max_length=_TEXT)
    topic: str = Field(min_length=1, max_length=65535)
    action: Literal["publish", "subscribe"]
    qos: int | str | None = None
    retain: bool | str | None = None


class EmqxAuthzOut(BaseModel):
    """allow or deny: EMQX treats anything else as ignore (then authorization.no_match)."""

    result: Literal["allow", "deny"]


class GoAuthOut(BaseModel):
    """The body beside the status, for auth_opt_http_response_mode json."""

    ok: bool
    error: str = ""
