"""API keys: with ``API_KEYS`` or ``API_KEYS_FILE`` set, every route but the probes and the page needs one.

A key is sent as ``Authorization: Bearer KEY`` (what gateways and OpenAPI clients send) or ``X-API-Key: KEY``.
Without a valid one the answer is 401 ``unauthorized`` with ``WWW-Authenticate: Bearer`` (RFC 6750), before the
request reaches any route, so an unknown path is no different from a known one. Open without a key: ``/health*``
and ``/v2/health/*`` (the orchestrator's probes), the web page (``/``, ``/static/``) and the API's description
(``/docs``, ``/docs-assets/``, ``/openapi.json``: no data, and Swagger UI needs it to offer its key prompt);
``/metrics`` too when ``METRICS_REQUIRE_KEY=false``, for a scraper inside the cluster.

Keys are compared in constant time: each presented key's SHA-256 against every configured key's, all of them each
time, so neither a key's prefix nor which key matched shows in the timing. Keys are never logged or echoed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from core.errors import ConfigError
from service.errors import PROBLEM_MEDIA_TYPE, problem_bytes
from service.settings import ServiceSettings

logger = logging.getLogger(__name__)

OPEN_PREFIXES = ("/health", "/v2/health/", "/static/", "/docs-assets/")
OPEN_PATHS = frozenset({"/", "/docs", "/openapi.json"})
REALM = "age-estimation"


@dataclass(frozen=True)
class ApiKeys:
    """The SHA-256 digests of the accepted keys, and whether ``/metrics`` needs one."""

    digests: tuple[bytes, ...]
    metrics_need_key: bool = True

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> ApiKeys | None:
        """The keys of ``API_KEYS`` and ``API_KEYS_FILE``; ``None`` when neither is set (the service is open).

        Raises ``ConfigError`` for a key file that cannot be read or a setting that holds no key at all: an
        operator who set one meant to lock the service, and a lock without a key would look like one.
        """
        keys: list[str] = []
        if settings.api_keys is not None:
            keys += _keys_of(settings.api_keys.get_secret_value().split(","), "API_KEYS")
        if settings.api_keys_file is not None:
            try:
                lines = settings.api_keys_file.read_text().splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"API_KEYS_FILE {settings.api_keys_file}: cannot read it: {exc}") from None
            keys += _keys_of([line.split("#", 1)[0] for line in lines], f"API_KEYS_FILE {settings.api_keys_file}")
        if settings.api_keys is None and settings.api_keys_file is None:
            return None
        return cls(tuple(_digest(key) for key in keys), settings.metrics_require_key)

    def accepts(self, presented: str) -> bool:
        """Whether ``presented`` is one of the keys, in time independent of which key and of how much matches."""
        digest = _digest(presented)
        matched = False
        for known in self.digests:
            matched |= hmac.compare_digest(known, digest)
        return matched

    def is_open(self, path: str) -> bool:
        """Whether ``path`` is served without a key."""
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return True
        return path == "/metrics" and not self.metrics_need_key


def _keys_of(candidates: list[str], source: str) -> list[str]:
    keys = [key.strip() for key in candidates if key.strip()]
    if not keys:
        raise ConfigError(f"{source} holds no key; give at least one, or unset it to serve without keys")
    if any(len(key.split()) > 1 for key in keys):
        raise ConfigError(f"{source}: a key contains white space, which no Authorization header can carry")
    return keys


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def presented_keys(headers: Headers) -> list[str]:
    """The keys sent: of ``Authorization: Bearer KEY`` and of ``X-API-Key: KEY``, either, both or none."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    keys = [token.strip()] if scheme.lower() == "bearer" and token.strip() else []
    api_key = headers.get("x-api-key", "").strip()
    return [*keys, api_key] if api_key else keys


class ApiKeyMiddleware:
    """Answer 401 ``unauthorized`` to any request for a protected path without an accepted key."""

    def __init__(self, app: ASGIApp, keys: ApiKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.keys.is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        keys = presented_keys(Headers(scope=scope))
        if any([self.keys.accepts(key) for key in keys]):
            await self.app(scope, receive, send)
            return
        if not keys:
            challenge = f'Bearer realm="{REALM}"'
            detail = "this service needs an API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
        else:
            challenge = f'Bearer realm="{REALM}", error="invalid_token"'
            detail = "the API key sent is not one this service accepts"
            logger.info("refused %s %s: wrong API key", scope["method"], scope["path"])
        # Open Inference Protocol clients (tritonclient, KServe's) read the protocol's {"error": ...} member.
        extra = {"error": detail} if scope["path"].startswith("/v2/") else None
        body = problem_bytes(401, detail, "unauthorized", extra)
        headers = [
            (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", challenge.encode()),
        ]
        if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            # The upload is left unread: the connection cannot carry another request after it.
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})
