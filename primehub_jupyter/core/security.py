"""Client tokens: random, shown once, stored only as a slow (bcrypt) hash."""

from __future__ import annotations

import secrets

import bcrypt

TOKEN_BYTES = 32


def new_token() -> str:
    """A new random token (43 URL-safe characters)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str, rounds: int = 12) -> str:
    """bcrypt hash of a token; slow on purpose, so run it off the event loop."""
    return bcrypt.hashpw(token.encode(), bcrypt.gensalt(rounds=rounds)).decode()


def verify_token(token: str, hashed: str) -> bool:
    """Whether the token matches the bcrypt hash."""
    try:
        return bcrypt.checkpw(token.encode(), hashed.encode())
    except ValueError:
        return False
