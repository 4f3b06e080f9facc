"""Deployment access: HTTP Basic (bcrypt off the event loop), internal tokens, bearer outcomes."""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import hmac
import math
import secrets
import time
from base64 import b64decode
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import bcrypt

from .routes import Route

# bcrypt at cost 12 takes ~0.25 s of CPU; two at a time keeps one core free for proxying even
# when someone floods a private deployment with wrong passwords.
HASH_CONCURRENCY = 2
# Requests waiting for a hash check beyond this are answered 429 at once instead of queueing.
HASH_QUEUE_LIMIT = 64
# Wrong credentials per client address: a burst of this many, then one more every
# 1/FAILURE_REFILL seconds (a token bucket, as nginx's limit_req with a burst).
FAILURE_BURST = 10
FAILURE_REFILL = 0.5
# At most one fetch of a bearer token issuer's key set per this many seconds, whatever the
# traffic: a flood of tokens naming unknown `kid`s must not turn the gateway into a JWKS hammer.
JWKS_REFRESH = 10.0
# Addresses tracked at once; the least recently failing is forgotten first (bounded memory).
TRACKED_ADDRESSES = 4096


def internal_token(admin_token: str, deployment_id: str) -> str:
    """The credential that lets the control plane call one deployment as a signed-in user.

    An HMAC of the deployment id keyed with the admin token: it proves the caller knows the
    admin token, yet is good for that deployment only, so no path trick on one deployment's
    URL can reach another.
    """
    message = f"invoke:{deployment_id}".encode()
    return hmac.new(admin_token.encode(), message, hashlib.sha256).hexdigest()


class TooManyAttempts(Exception):
    """Too many password checks: the queue is full, or this address failed too often."""

    def __init__(self, retry_after: int = 1) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


class InvalidToken(Exception):
    """A bearer token that is not valid (401): the message says why, never quoting the token."""


class BearerUnavailable(Exception):
    """Bearer tokens cannot be checked now (503): e.g. the issuer's key set is unreachable."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a valid bearer token names: the user and the groups of its groups claim."""

    user: str
    groups: frozenset[str]


class FailureLimiter:
    """A token bucket of wrong-credential attempts per client address, in bounded memory."""

    def __init__(
        self,
        burst: int = FAILURE_BURST,
        refill: float = FAILURE_REFILL,
        capacity: int = TRACKED_ADDRESSES,
    ) -> None:
        self.burst = burst
        self.refill = refill
        self.capacity = capacity
        # address -> (tokens left, monotonic time they were counted); oldest failure first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _tokens(self, address: str, now: float) -> float:
        entry = self._buckets.get(address)
        if entry is None:
            return float(self.burst)
        tokens, since = entry
        return min(float(self.burst), tokens + (now - since) * self.refill)

    def take(self, address: str) -> int:
        """Spend one attempt of `address`: 0 when it may try now, else seconds until it may.

        Taken before the check, so a burst of concurrent guesses cannot all reach bcrypt;
        a check that succeeds gives its attempt back (`refund`).
        """
        now = time.monotonic()
        tokens = self._tokens(address, now)
        if tokens < 1.0:
            return max(1, math.ceil((1.0 - tokens) / self.refill))
        self._buckets[address] = (tokens - 1.0, now)
        self._buckets.move_to_end(address)
        while len(self._buckets) > self.capacity:
            self._buckets.popitem(last=False)
        return 0

    def refund(self, address: str) -> None:
        """Give back the attempt of a check that succeeded."""
        entry = self._buckets.get(address)
        if entry is not None:
            tokens, since = entry
            self._buckets[address] = (min(float(self.burst), tokens + 1.0), since)


class ClientAuthenticator:
    """Checks `Authorization: Basic name:token` for private deployments.

    Successful credentials are cached per deployment under an HMAC-SHA256 of `name:token` keyed
    with a random per-process secret, so the cache never holds a usable token and a cache hit costs
    microseconds instead of a bcrypt computation.
    """

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._executor = ThreadPoolExecutor(
            max_workers=HASH_CONCURRENCY, thread_name_prefix="bcrypt"
        )
        self._slots = asyncio.Semaphore(HASH_CONCURRENCY)
        self._waiting = 0
        self.limiter = FailureLimiter()

    def close(self) -> None:
        """Stop the hashing threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def authenticate(self, route: Route, header: str | None, remote: str) -> str | None:
        """Return the client name when `header` holds valid credentials for `route`, else None.

        Raises TooManyAttempts when `remote` (the client address) sent too many wrong
        credentials lately: it is answered without hashing. Credentials already verified are
        accepted from the cache even then, so known clients keep their latency.
        """
        if not header or header[:6].lower() != "basic ":
            return None
        try:
            decoded = b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        name_bytes, sep, token = decoded.partition(b":")
        digest = hmac.new(self._key, decoded, hashlib.sha256).digest()
        cache = route.credentials
        cached = cache.accepted.get(digest)
        if cached is not None:
            return cached
        wait = self.limiter.take(remote)
        if wait:
            raise TooManyAttempts(wait)
        name = self._client_name(name_bytes) if sep else None
        hashed = route.clients.get(name) if name is not None else None
        # Unknown names are refused without hashing; a timing difference reveals only which
        # client names exist, which are not secret (they appear in the deployment's listing).
        if name is None or hashed is None or digest in cache.refused:
            return None
        try:
            accepted = await self._check(token, hashed)
        except TooManyAttempts:
            self.limiter.refund(remote)  # not this address's failure: the queue was full
            raise
        if accepted:
            self.limiter.refund(remote)
            cache.accepted[digest] = name
            return name
        cache.refuse(digest)
        return None

    @staticmethod
    def _client_name(raw: bytes) -> str | None:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return None

    async def _check(self, token: bytes, hashed: bytes) -> bool:
        if self._waiting >= HASH_QUEUE_LIMIT:
            raise TooManyAttempts
        self._waiting += 1
        try:
            async with self._slots:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._executor, _checkpw, token, hashed)
        finally:
            self._waiting -= 1


def _checkpw(token: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(token, hashed)
    except ValueError:  # a malformed hash slipped through validation: treat as a wrong password
        return False
