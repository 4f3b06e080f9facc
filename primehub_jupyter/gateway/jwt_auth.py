"""Bearer JWTs at the gateway: the issuer's keys (JWKS), validation, a cache of valid tokens."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import ipaddress
import json
import logging
import math
import re
import secrets
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
from jwt import PyJWK, PyJWKClient

from ..core.access import ALGORITHMS, JwtSettings, token_groups
from .auth import (
    JWKS_REFRESH,
    BearerUnavailable,
    Caller,
    FailureLimiter,
    InvalidToken,
    TooManyAttempts,
)

log = logging.getLogger("primehub_jupyter.gateway")

# Keys older than this are fetched again in the background (issuers rotate keys).
KEYS_MAX_AGE = 300.0
FETCH_TIMEOUT = 10.0
MAX_JWKS_BYTES = 1024 * 1024
# Longer tokens are refused before any parsing (Keycloak's are 1-3 KB).
MAX_TOKEN_LENGTH = 16 * 1024
MAX_KID_LENGTH = 256
# header.payload.signature in base64url (JWS compact form; an empty signature is alg none's).
COMPACT_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# The user goes upstream in X-Forwarded-User: one printable line.
MAX_USER_LENGTH = 256
# Valid tokens remembered at once; the oldest is forgotten first.
TOKEN_CACHE_SIZE = 10_000
# Why a token was refused, by PyJWT's exception (401 descriptions, never the token itself).
REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.ImmatureSignatureError, "the token is not valid yet (nbf/iat in the future)"),
    (jwt.InvalidAudienceError, "the token is for another audience"),
    (jwt.InvalidIssuerError, "the token is from another issuer"),
    (jwt.InvalidSignatureError, "the token's signature does not verify"),
    (jwt.InvalidAlgorithmError, "the token's algorithm is not allowed"),
)


def read_settings(path: str) -> JwtSettings:
    """The JwtSettings the engine wrote for the gateway (JSON), validated."""
    return JwtSettings.model_validate_json(Path(path).read_bytes())


def _fetcher(settings: JwtSettings) -> tuple[str, Callable[[], Any]]:
    """Where keys come from (for messages) and a blocking function returning the JWKS JSON."""
    source = settings.jwks
    parts = urlsplit(source)
    if parts.scheme in ("https", "http"):
        if parts.scheme == "http" and not _loopback(parts.hostname or ""):
            raise ValueError(f"the JWKS URL must be https (plain http only on loopback): {source}")
        context = ssl.create_default_context(cafile=settings.jwks_ca or None)
        client = PyJWKClient(
            source, cache_jwk_set=False, timeout=FETCH_TIMEOUT, ssl_context=context
        )
        return source, client.fetch_data
    path = Path(parts.path if parts.scheme == "file" else source)

    def read_file() -> Any:
        with path.open("rb") as f:
            raw = f.read(MAX_JWKS_BYTES + 1)
        if len(raw) > MAX_JWKS_BYTES:
            raise ValueError(f"larger than {MAX_JWKS_BYTES} bytes")
        return json.loads(raw)

    return str(path), read_file


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_jwks(document: Any) -> dict[str | None, PyJWK]:
    """The RS256/ES256 signing keys of a JWKS by `kid`; encryption keys and others are skipped.

    A key without a `kid` is filed under None (issuers with one key may leave it out).
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('not a JSON Web Key Set (an object with a "keys" list)')
    keys: dict[str | None, PyJWK] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        if kid is not None and (not isinstance(kid, str) or len(kid) > MAX_KID_LENGTH):
            continue
        try:
            key = PyJWK(entry)
        except (jwt.PyJWTError, ValueError, TypeError):
            continue  # a key type or curve we do not take; the others still count
        if key.algorithm_name in ALGORITHMS:
            keys[kid] = key
    if not keys:
        raise ValueError(f"no {' or '.join(ALGORITHMS)} signing key in the key set")
    return keys


class KeySet:
    """The issuer's signing keys, fetched off the event loop at most once per `interval`.

    A fetch that fails keeps the keys already known; until a first fetch succeeds, bearer
    tokens are answered 503 with the reason, and a request after `interval` tries again.
    """

    def __init__(
        self,
        settings: JwtSettings,
        interval: float = JWKS_REFRESH,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.interval = interval
        self._fetch: Callable[[], Any] | None
        self.keys: dict[str | None, PyJWK] = {}
        self.error = "the issuer's keys have not been fetched yet"
        self._on_change = on_change
        self._attempted = -math.inf  # monotonic time of the last fetch attempt
        self._loaded = -math.inf  # ... of the last successful one
        self._running: asyncio.Future[None] | None = None
        self._seen = ""  # the last key set loaded, to tell a change
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jwks")
        try:
            self.source, self._fetch = _fetcher(settings)
        except ValueError as exc:
            self.source, self._fetch = settings.jwks, None
            self.error = str(exc)

    def close(self) -> None:
        """Stop the fetching thread."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def refresh(self) -> asyncio.Future[None] | None:
        """Start a fetch unless one runs or the last began less than `interval` ago.

        Returns the running fetch to await, or None when none may start now.
        """
        if self._running is not None and not self._running.done():
            return self._running
        now = time.monotonic()
        if self._fetch is None or now - self._attempted < self.interval:
            return None
        self._attempted = now
        self._running = asyncio.ensure_future(self._load())
        return self._running

    async def _load(self) -> None:
        assert self._fetch is not None
        loop = asyncio.get_running_loop()
        try:
            document = await loop.run_in_executor(self._executor, self._fetch)
            keys = parse_jwks(document)
        except Exception as exc:  # any failure of a remote document is a reason, not a crash
            reason = str(exc) or type(exc).__name__
            self.error = f"cannot load the issuer's keys from {self.source}: {reason}"
            log.warning("%s", self.error if not self.keys else self.error + " (keeping the old)")
            return
        seen = json.dumps(document, sort_keys=True)
        changed, self._seen = seen != self._seen, seen
        self.keys, self.error = keys, ""
        self._loaded = time.monotonic()
        if changed:
            log.info("issuer keys loaded from %s: %d key(s)", self.source, len(keys))
            if self._on_change is not None:
                self._on_change()

    async def key(self, kid: str | None) -> PyJWK:
        """The signing key named `kid`, fetching the key set again (rate-limited) if unknown."""
        key = self._find(kid)
        if key is not None:
            if time.monotonic() - self._loaded > KEYS_MAX_AGE:
                self.refresh()  # in the background: this request uses the key it has
            return key
        running = self.refresh()
        if running is not None:
            await asyncio.shield(running)
            key = self._find(kid)
            if key is not None:
                return key
        if not self.keys:
            raise BearerUnavailable(self.error)
        raise InvalidToken("the token's signing key (kid) is not in the issuer's key set")

    def _find(self, kid: str | None) -> PyJWK | None:
        key = self.keys.get(kid)
        if key is None and kid is None and len(self.keys) == 1:
            key = next(iter(self.keys.values()))  # a token without kid, an issuer with one key
        return key


def _header(token: str) -> dict[str, Any]:
    """The JOSE header of a compact JWT, read once here (PyJWT reads it again, verified)."""
    if COMPACT_JWT.fullmatch(token) is None:
        raise InvalidToken("the token is not a well-formed JWT")
    segment = token.partition(".")[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error):
        raise InvalidToken("the token is not a well-formed JWT") from None
    if not isinstance(header, dict):
        raise InvalidToken("the token is not a well-formed JWT")
    return header


class BearerAuthenticator:
    """Checks `Authorization: Bearer <JWT>` against the issuer's keys and claims.

    Valid tokens are cached until they expire under an HMAC-SHA256 keyed with a per-process
    secret (never the token), so a known token costs one HMAC and a dict lookup. Failures
    spend the address's attempts in the same FailureLimiter as HTTP Basic.
    """

    def __init__(
        self,
        settings: JwtSettings,
        limiter: FailureLimiter,
        refresh_interval: float = JWKS_REFRESH,
    ) -> None:
        self.settings = settings
        self.limiter = limiter
        self.keys = KeySet(settings, refresh_interval, on_change=self.forget)
        self._secret = secrets.token_bytes(32)
        self._valid: OrderedDict[bytes, tuple[float, Caller]] = OrderedDict()
        self._options: Any = {"require": ["exp", "iss", "aud"]}

    def start(self) -> None:
        """Fetch the keys in the background (the gateway serves meanwhile)."""
        self.keys.refresh()

    def close(self) -> None:
        """Stop the key fetching thread."""
        self.keys.close()

    def forget(self) -> None:
        """Drop cached tokens: the key set changed, so a removed key's tokens stop working."""
        self._valid.clear()

    async def authenticate(self, token: str, remote: str) -> Caller:
        """The caller a valid token names; raises InvalidToken, BearerUnavailable or
        TooManyAttempts (this address failed too often lately; cached tokens still pass)."""
        digest = hmac.digest(self._secret, token.encode("utf-8", "surrogatepass"), "sha256")
        cached = self._valid.get(digest)
        if cached is not None:
            if cached[0] > time.time():
                return cached[1]
            del self._valid[digest]
        wait = self.limiter.take(remote)
        if wait:
            raise TooManyAttempts(wait)
        try:
            expires, caller = await self._validate(token)
        except BearerUnavailable:
            self.limiter.refund(remote)  # the issuer's fault, not the caller's
            raise
        self.limiter.refund(remote)
        self._valid[digest] = (expires, caller)
        if len(self._valid) > TOKEN_CACHE_SIZE:
            self._valid.popitem(last=False)
        return caller

    async def _validate(self, token: str) -> tuple[float, Caller]:
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken("the token is too long")
        header = _header(token)
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise InvalidToken(f"the token's algorithm must be {' or '.join(ALGORITHMS)}")
        kid = header.get("kid")
        if kid is not None and (not isinstance(kid, str) or len(kid) > MAX_KID_LENGTH):
            raise InvalidToken("the token's kid is not a short string")
        key = await self.keys.key(kid)
        if key.algorithm_name != algorithm:
            raise InvalidToken("the token's algorithm does not match its signing key")
        settings = self.settings
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway_seconds,
                options=self._options,
            )
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"the token has no '{exc.claim}' claim") from None
        except jwt.PyJWTError as exc:
            reason = next((r for kind, r in REASONS if isinstance(exc, kind)), None)
            raise InvalidToken(reason or "the token is not valid") from None
        user = next(
            (v for c in settings.user_claims if isinstance(v := claims.get(c), str) and v), None
        )
        if user is None or len(user) > MAX_USER_LENGTH or not user.isprintable():
            claims_named = " or ".join(settings.user_claims)
            raise InvalidToken(f"the token names no user ({claims_named}: one printable line)")
        groups = frozenset(token_groups(claims.get(settings.groups_claim)))
        expires = claims["exp"]
        if not isinstance(expires, int | float):
            raise InvalidToken("the token's exp is not a number")
        return float(expires), Caller(user=user, groups=groups)
