"""Token authentication of OCI registries, for mirrors of the Ollama registry (Harbor, distribution...).

Such registries answer an anonymous request with ``401`` and ``WWW-Authenticate: Bearer realm="...",
service="...",scope="..."``; the client then asks the realm for a token (anonymously: public
repositories need no credentials) and repeats the request with ``Authorization: Bearer <token>``. The
registry's blob redirects go to another origin, where httpx drops the header again.
"""

from __future__ import annotations

import re

import httpx

from .errors import AuthenticationError
from .http import request
from .retry import RetryPolicy

__all__ = ["fetch_token", "parse_bearer_challenge"]

_PARAM = re.compile(r'(\w+)="([^"]*)"')


def parse_bearer_challenge(header: str) -> dict[str, str] | None:
    """``{"realm", "service", "scope"}`` from a Bearer challenge; None for any other scheme (pure)."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    params = dict(_PARAM.findall(rest))
    return params if params.get("realm") else None


def fetch_token(client: httpx.Client, challenge: dict[str, str], *, source: str, policy: RetryPolicy) -> str:
    """An anonymous token from the challenge's realm."""
    params = {key: challenge[key] for key in ("service", "scope") if challenge.get(key)}
    url = str(httpx.URL(challenge["realm"], params=params))
    body = request(client, "GET", url, source=source, policy=policy).json()
    token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise AuthenticationError(f"{source}: the registry's token service {challenge['realm']} gave no token")
    return token
