"""Bearer JWT settings: the identity provider whose tokens private endpoints accept."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_USER_CLAIMS = ("preferred_username", "sub")
DEFAULT_GROUPS_CLAIM = "groups"
# Accepted clock difference between the identity provider and us, for exp/nbf/iat.
DEFAULT_LEEWAY_SECONDS = 30
# Only asymmetric algorithms: a public key can never be used as an HMAC secret.
ALGORITHMS = ("RS256", "ES256")


class JwtSettings(BaseModel):
    """What `PrimeHubApp.jwt_*` configure; None/absent issuer means bearer tokens are off.

    `jwks` is an https URL of the issuer's JSON Web Key Set or a local file path (tests,
    air-gapped sites). Both engines receive it: the local gateway validates tokens itself, the
    Kubernetes engine renders it into the edge's configuration.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    issuer: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    jwks: str = Field(min_length=1)
    user_claim: str = Field(
        default="", description="Claim naming the user; empty: preferred_username, then sub."
    )
    groups_claim: str = DEFAULT_GROUPS_CLAIM
    jwks_ca: str = Field(
        default="",
        description="PEM file of the CA certificates trusted for an https `jwks` "
        "(empty: the system's).",
    )
    leeway_seconds: int = Field(default=DEFAULT_LEEWAY_SECONDS, ge=0, le=600)

    @property
    def user_claims(self) -> tuple[str, ...]:
        """Claims tried in order for the caller's user name."""
        return (self.user_claim,) if self.user_claim else DEFAULT_USER_CLAIMS


def token_groups(value: object) -> list[str]:
    """Group names from a groups claim: a list of names or Keycloak's '/parent/child' paths.

    A path counts as its full path without the leading '/' and as its last segment, so
    `/team-a` matches the group `team-a`.
    """
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    names: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item:
            continue
        stripped = item.strip("/")
        names.append(stripped)
        last = stripped.rsplit("/", 1)[-1]
        if last != stripped:
            names.append(last)
    return names
