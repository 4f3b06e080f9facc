"""The gateway's routing table: parsing and validating what the engine PUTs, and replica choice."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

DEPLOYMENT_ID = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
ACCESS_TYPES = ("public", "private")
# Client names and replica URLs end up in raw header bytes: no spaces or control characters.
VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")
# Modular crypt format of bcrypt: $2a$/$2b$/$2y$, a two-digit cost, 53 characters of salt+hash.
BCRYPT_HASH = re.compile(r"\$2[aby]?\$\d\d\$[./A-Za-z0-9]{53}")
# Sizes of the per-deployment credential caches; entries only exist for names in `clients`
# (positive) or are dropped wholesale when full (negative), so memory stays bounded.
NEGATIVE_CACHE_SIZE = 256
# Rejected ids are echoed back to the engine; an id that is not even a label is cut to this.
REJECTED_ID_LENGTH = 80


class RouteError(ValueError):
    """A routing table the gateway refuses; the message says which field is wrong."""


@dataclass(slots=True)
class Replica:
    """One upstream model-server process of a deployment."""

    name: str
    url: str  # scheme://host:port, no trailing slash; also the connection pool's key
    host: str
    port: int
    tls: bool
    host_header: bytes  # "host:port" as sent in the Host header
    # Event-loop time until which this replica is tried last (it refused a connection).
    down_until: float = 0.0


@dataclass(slots=True)
class CredentialCache:
    """Verified (and recently refused) HTTP Basic credentials of one deployment.

    Keys are HMAC digests of `name:token`, never the token itself. A cache lives as long as the
    deployment's `clients` map is unchanged: a routes update with other clients gets a new one.
    """

    accepted: dict[bytes, str] = field(default_factory=dict)
    refused: set[bytes] = field(default_factory=set)

    def refuse(self, digest: bytes) -> None:
        """Remember a wrong credential so a client retrying it does not cost another bcrypt."""
        if len(self.refused) >= NEGATIVE_CACHE_SIZE:
            self.refused.clear()
        self.refused.add(digest)


@dataclass(slots=True)
class Route:
    """Where and how traffic for one deployment goes."""

    id: str
    phase: str
    message: str
    private: bool
    clients: dict[str, bytes]  # client name -> bcrypt hash
    replicas: list[Replica]
    prefix_raw: bytes  # b"/deployment/<id>", sent upstream as X-Forwarded-Prefix
    credentials: CredentialCache = field(default_factory=CredentialCache)
    _next: int = 0

    def candidates(self, now: float) -> list[Replica]:
        """Replicas in the order to try them: round-robin, ones that just refused come last.

        Always a new list, which the caller may extend.
        """
        replicas = self.replicas
        count = len(replicas)
        if count <= 1:
            return list(replicas)
        start = self._next
        self._next = (start + 1) % count
        ordered = replicas[start:] + replicas[:start]
        if any(r.down_until > now for r in ordered):
            ordered.sort(key=lambda r: r.down_until > now)  # stable: keeps round-robin order
        return ordered

    def unavailable_reason(self) -> str:
        """The 503 text for a deployment without a ready replica."""
        phase = self.phase or "Unknown"
        detail = f"{phase}: {self.message}" if self.message else phase
        return f"deployment '{self.id}' has no ready replica (phase: {detail})"


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise RouteError(message)


def _parse_replica(dep_id: str, index: int, raw: Any) -> Replica:
    where = f"deployments.{dep_id}.replicas[{index}]"
    _require(isinstance(raw, dict), f"{where} must be an object")
    name = raw.get("name", f"{dep_id}-{index}")
    _require(
        isinstance(name, str) and len(name) <= 253 and VISIBLE_ASCII.fullmatch(name) is not None,
        f"{where}.name must be 1-253 visible ASCII characters",
    )
    url = raw.get("url")
    _require(isinstance(url, str), f"{where}.url must be a string like http://127.0.0.1:8080")
    # Checked before parsing: urlsplit raises on some non-ASCII and bracket forms.
    _require(
        len(url) <= 2048 and VISIBLE_ASCII.fullmatch(url) is not None,
        f"{where}.url must be visible ASCII: {url[:100]!r}",
    )
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError as exc:
        raise RouteError(f"{where}.url is not a valid URL ({exc}): {url!r}") from None
    _require(
        parts.scheme in ("http", "https") and bool(hostname),
        f"{where}.url must be an http(s) URL with a host, got {url!r}",
    )
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise RouteError(f"{where}.url has an invalid port: {url!r}") from None
    _require(parts.username is None, f"{where}.url must not carry credentials: {url!r}")
    _require(
        parts.path in ("", "/") and not parts.query and not parts.fragment,
        f"{where}.url must not have a path, query or fragment: {url!r}",
    )
    host = hostname or ""
    return Replica(
        name=name,
        url=f"{parts.scheme}://{parts.netloc}",
        host=host,
        port=port,
        tls=parts.scheme == "https",
        host_header=parts.netloc.encode("ascii"),
    )


def _parse_clients(dep_id: str, raw: Any) -> dict[str, bytes]:
    where = f"deployments.{dep_id}.clients"
    if raw is None:
        return {}
    _require(isinstance(raw, dict), f"{where} must be an object of client name -> bcrypt hash")
    clients: dict[str, bytes] = {}
    for name, hashed in raw.items():
        _require(
            len(name) <= 253 and VISIBLE_ASCII.fullmatch(name) is not None and ":" not in name,
            f"{where}: client name {name!r} must be 1-253 visible ASCII characters without ':'",
        )
        _require(
            isinstance(hashed, str) and BCRYPT_HASH.fullmatch(hashed) is not None,
            f"{where}.{name} must be a bcrypt hash ($2b$...)",
        )
        clients[name] = hashed.encode("ascii")
    return clients


def _parse_route(dep_id: Any, raw: Any) -> Route:
    _require(
        isinstance(dep_id, str) and DEPLOYMENT_ID.fullmatch(dep_id) is not None,
        f"deployment id {dep_id!r} is not a DNS-1035 label (lowercase letters, digits and '-', "
        "starting with a letter, ending with a letter or digit, at most 63 characters)",
    )
    where = f"deployments.{dep_id}"
    _require(isinstance(raw, dict), f"{where} must be an object")
    phase = raw.get("phase", "")
    message = raw.get("message", "")
    _require(isinstance(phase, str), f"{where}.phase must be a string")
    _require(isinstance(message, str), f"{where}.message must be a string")
    access = raw.get("accessType", "public")
    _require(access in ACCESS_TYPES, f"{where}.accessType must be 'public' or 'private'")
    replicas_raw = raw.get("replicas", [])
    _require(isinstance(replicas_raw, list), f"{where}.replicas must be a list")
    replicas = [_parse_replica(dep_id, i, r) for i, r in enumerate(replicas_raw)]
    return Route(
        id=dep_id,
        phase=phase,
        message=message,
        private=access == "private",
        clients=_parse_clients(dep_id, raw.get("clients")),
        replicas=replicas,
        prefix_raw=f"/deployment/{dep_id}".encode("ascii"),
    )


def parse_routes(document: Any) -> tuple[dict[str, Route], dict[str, str]]:
    """Validate a `PUT /_primehub/routes` body: the new table and the entries it refused.

    Each deployment's entry is validated on its own: a bad one is left out of the table and
    reported (id -> reason), so one bad entry never keeps the others from their routes. Only
    a malformed document as a whole raises RouteError.
    """
    _require(isinstance(document, dict), "body must be a JSON object with a 'deployments' key")
    deployments = document.get("deployments")
    _require(isinstance(deployments, dict), "'deployments' must be an object keyed by id")
    routes: dict[str, Route] = {}
    rejected: dict[str, str] = {}
    for dep_id, raw in deployments.items():
        try:
            routes[dep_id] = _parse_route(dep_id, raw)
        except RouteError as exc:
            rejected[str(dep_id)[:REJECTED_ID_LENGTH]] = str(exc)
    return routes, rejected


def carry_over(old: dict[str, Route], new: dict[str, Route]) -> None:
    """Keep state that must survive a routes update.

    Credential caches survive only where the clients map is identical, so a removed or re-issued
    token stops working with the update. Round-robin position and down-marks survive so that an
    update under load keeps spreading traffic evenly.
    """
    for dep_id, route in new.items():
        previous = old.get(dep_id)
        if previous is None:
            continue
        if previous.clients == route.clients and previous.private == route.private:
            route.credentials = previous.credentials
        if route.replicas:
            route._next = previous._next % len(route.replicas)
        known = {(r.name, r.url): r.down_until for r in previous.replicas}
        for replica in route.replicas:
            replica.down_until = known.get((replica.name, replica.url), 0.0)
