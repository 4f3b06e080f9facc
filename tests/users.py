"""A real Jupyter IdentityProvider for tests: `Authorization: token <name>` signs in as <name>."""

from __future__ import annotations

from jupyter_server.auth.identity import IdentityProvider, User
from traitlets import List, Unicode


class NamedTokenIdentityProvider(IdentityProvider):
    """Each known user's token is their name; anything else is anonymous (rejected)."""

    users = List(Unicode(), config=True)

    @property
    def auth_enabled(self) -> bool:
        return True

    def get_user(self, handler):  # type: ignore[override]
        header = handler.request.headers.get("Authorization", "")
        name = header.removeprefix("token ").strip()
        if name in self.users:
            # Token-authenticated requests are exempt from XSRF checks, as in Jupyter itself.
            handler._token_authenticated = True
            return User(username=name)
        return None
