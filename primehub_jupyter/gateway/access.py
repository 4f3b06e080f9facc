"""Who may call a private deployment: HTTP Basic clients, or bearer JWTs within its policy."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from aiohttp import web
from multidict import CIMultiDict

from .auth import BearerUnavailable, ClientAuthenticator, InvalidToken, TooManyAttempts
from .routes import Route

if TYPE_CHECKING:  # jwt_auth imports PyJWT, loaded only when bearer tokens are configured
    from .jwt_auth import BearerAuthenticator

# Seconds a caller should wait when the issuer's keys cannot be had (the fetch retry interval).
UNAVAILABLE_RETRY_AFTER = "10"


def _refusal(status: int, message: str, headers: list[tuple[str, str]]) -> web.Response:
    merged = CIMultiDict([("Content-Type", "application/json"), *headers])
    return web.Response(status=status, body=orjson.dumps({"message": message}), headers=merged)


class Gatekeeper:
    """Admits requests to private deployments; `bearer` is None when JWTs are not configured.

    A request with `Authorization: Bearer` is judged by its token alone (never falls back to
    Basic); anything else by HTTP Basic, as before bearer tokens existed.
    """

    def __init__(
        self, basic: ClientAuthenticator, bearer: BearerAuthenticator | None = None
    ) -> None:
        self.basic = basic
        self.bearer = bearer

    def close(self) -> None:
        """Stop the hashing and key fetching threads."""
        self.basic.close()
        if self.bearer is not None:
            self.bearer.close()

    async def admit(self, route: Route, request: web.BaseRequest) -> str | web.Response:
        """The caller's name (client or token user), or the response refusing the request."""
        header = request.headers.get("Authorization")
        remote = request.remote or ""
        scheme, _, credentials = (header or "").partition(" ")
        if scheme.lower() == "bearer":
            return await self._bearer(route, credentials.strip(), remote)
        try:
            user = await self.basic.authenticate(route, header, remote)
        except TooManyAttempts as exc:
            return _too_many(exc)
        return self._challenge(route) if user is None else user

    async def _bearer(self, route: Route, token: str, remote: str) -> str | web.Response:
        if self.bearer is None:
            return _refusal(
                401,
                f"deployment '{route.id}' is private and this server takes no bearer tokens "
                "(PrimeHubApp.jwt_issuer is not set): send HTTP Basic credentials",
                [("WWW-Authenticate", f'Basic realm="primehub deployment {route.id}"')],
            )
        try:
            caller = await self.bearer.authenticate(token, remote)
        except TooManyAttempts as exc:
            return _too_many(exc)
        except InvalidToken as exc:
            reason = str(exc)
            challenge = (
                f'Bearer realm="primehub deployment {route.id}", error="invalid_token", '
                f'error_description="{reason}"'
            )
            return _refusal(
                401, f"invalid bearer token: {reason}", [("WWW-Authenticate", challenge)]
            )
        except BearerUnavailable as exc:
            return _refusal(
                503,
                f"bearer tokens cannot be checked now: {exc}",
                [("Retry-After", UNAVAILABLE_RETRY_AFTER)],
            )
        if not route.admits(caller.user, caller.groups):
            if route.policy is not None:
                why = "neither the user nor any of its groups is in the deployment's access policy"
            elif route.group is not None:
                why = f"the token's groups do not include the deployment's group '{route.group}'"
            else:
                why = "the deployment names no group or access policy"
            challenge = f'Bearer realm="primehub deployment {route.id}", error="insufficient_scope"'
            return _refusal(
                403,
                f"user '{caller.user}' may not call deployment '{route.id}': {why}",
                [("WWW-Authenticate", challenge)],
            )
        return caller.user

    def _challenge(self, route: Route) -> web.Response:
        realm = f'realm="primehub deployment {route.id}"'
        headers = [("WWW-Authenticate", f"Basic {realm}")]
        message = (
            f"deployment '{route.id}' is private: send HTTP Basic credentials "
            "(client name and token, e.g. curl -u name:token)"
        )
        if self.bearer is not None:
            headers.append(("WWW-Authenticate", f"Bearer {realm}"))
            message += " or a bearer JWT (Authorization: Bearer <token>)"
        return _refusal(401, message, headers)


def _too_many(exc: TooManyAttempts) -> web.Response:
    return _refusal(
        429,
        f"too many failed authentication attempts; retry in {exc.retry_after} s",
        [("Retry-After", str(exc.retry_after))],
    )
