"""Domain errors, each carrying the HTTP status the REST layer answers with."""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error a user can act on; `message` is shown to them as is."""

    status = 500
    reason = "Error"

    def __init__(self, message: str, *, details: list[dict] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []

    def to_json(self) -> dict:
        body: dict = {"message": self.message, "reason": self.reason}
        if self.details:
            body["details"] = self.details
        return body


class BadRequest(ServiceError):
    """The request itself is malformed (e.g. not JSON)."""

    status = 400
    reason = "BadRequest"


class ValidationError(ServiceError):
    """The request is well-formed but a field is invalid."""

    status = 422
    reason = "Invalid"


class Forbidden(ServiceError):
    """The user may not do this (not a member, feature disabled, not an admin)."""

    status = 403
    reason = "Forbidden"


class NotFound(ServiceError):
    """The object does not exist, or the user may not know it exists."""

    status = 404
    reason = "NotFound"


class Conflict(ServiceError):
    """The object already exists, or it changed since the caller read it."""

    status = 409
    reason = "Conflict"


class Unchangeable(Conflict):
    """The object cannot be changed at all (e.g. a quarantined deployment): never retried."""


FEATURE_DISABLED_MESSAGE = (
    "Feature not available - Model Deployment is not enabled for this group. "
    "Please contact your administrator to enable it."
)


class FeatureDisabled(Forbidden):
    """Model deployment is not enabled for the group (PrimeHub's wording)."""

    reason = "FeatureNotAvailable"

    def __init__(self, group: str) -> None:
        super().__init__(FEATURE_DISABLED_MESSAGE, details=[{"group": group}])


class StorageUnavailable(ServiceError):
    """The state database cannot be written (disk full, read-only, I/O error): retry later."""

    status = 507
    reason = "InsufficientStorage"
