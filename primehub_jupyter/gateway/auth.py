"""HTTP Basic auth of deployment clients against bcrypt hashes, off the event loop."""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import hmac
import secrets
from base64 import b64decode
from concurrent.futures import ThreadPoolExecutor

import bcrypt

from .routes import Route

# bcrypt at cost 12 takes ~0.25 s of CPU; two at a time keeps one core free for proxying even
# when someone floods a private deployment with wrong passwords.
HASH_CONCURRENCY = 2
# Requests waiting for a hash check beyond this are answered 429 at once instead of queueing.
HASH_QUEUE_LIMIT = 64


class TooManyAttempts(Exception):
    """Raised when the queue of pending password checks is full."""


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

    def close(self) -> None:
        """Stop the hashing threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def authenticate(self, route: Route, header: str | None) -> str | None:
        """Return the client name when `header` holds valid credentials for `route`, else None."""
        if not header or header[:6].lower() != "basic ":
            return None
        try:
            decoded = b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        name_bytes, sep, token = decoded.partition(b":")
        if not sep:
            return None
        digest = hmac.new(self._key, decoded, hashlib.sha256).digest()
        cache = route.credentials
        cached = cache.accepted.get(digest)
        if cached is not None:
            return cached
        if digest in cache.refused:
            return None
        try:
            name = name_bytes.decode("utf-8")
        except UnicodeDecodeError:
            return None
        hashed = route.clients.get(name)
        if hashed is None:
            # Unknown names are refused without hashing; a timing difference reveals only which
            # client names exist, which are not secret (they appear in the deployment's listing).
            return None
        if await self._check(token, hashed):
            cache.accepted[digest] = name
            return name
        cache.refuse(digest)
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
