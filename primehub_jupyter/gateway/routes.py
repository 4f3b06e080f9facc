"""The gateway's routing table: parsing and validating what the engine PUTs, and replica choice."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .load import PredictorLoad

DEPLOYMENT_ID = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
ACCESS_TYPES = ("public", "private")
# Client names and replica URLs end up in raw header bytes: no spaces or control characters.
VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")
# As core.models checks them; repeated so the gateway process stays independent of the core.
PREDICTOR_NAME = re.compile(r"[a-zA-Z0-9](?:[-_.a-zA-Z0-9]{0,61}[a-zA-Z0-9])?")
# Group names are resource names, as core.models checks them.
GROUP_NAME = PREDICTOR_NAME
# Users a policy names: one printable line (as core.models.PolicyUser), at most 255 characters.
MAX_POLICY_USER = 255
MAX_POLICY_ENTRIES = 256
HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}")
MAX_PREDICTORS = 4
# The predictor of a table entry that lists replicas without predictors.
DEFAULT_PREDICTOR = "predictor1"
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


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """Who may call a private deployment with a bearer JWT: named users or groups."""

    users: frozenset[str]
    groups: frozenset[str]


@dataclass(slots=True)
class PredictorRoute:
    """One predictor of a deployment: its weight, whether it is the shadow, its replicas."""

    name: str
    traffic: int  # percent of requests; 0 for a shadow
    shadow: bool
    replicas: list[Replica]
    phase: str = ""
    message: str = ""
    # No replica now, yet one is coming (it scales to zero, or is waking): requests chosen for
    # it wait in the gateway's hold (gateway/hold.py) instead of failing.
    hold: bool = False
    # In-flight count and counters; the same object across routes updates (see carry_over).
    load: PredictorLoad = field(default_factory=PredictorLoad)
    _next: int = 0  # round-robin position among the replicas
    _current: int = 0  # smooth weighted round-robin state among the predictors

    @property
    def available(self) -> bool:
        """Whether requests chosen for this predictor can be sent now."""
        return bool(self.replicas)

    @property
    def takes_requests(self) -> bool:
        """Whether requests may be chosen for it: sent now, or held until it wakes."""
        return self.hold or bool(self.replicas)

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


@dataclass(slots=True)
class Route:
    """Where and how traffic for one deployment goes."""

    id: str
    phase: str
    message: str
    private: bool
    clients: dict[str, bytes]  # client name -> bcrypt hash
    predictors: list[PredictorRoute]  # in spec order
    prefix_raw: bytes  # b"/deployment/<id>", sent upstream as X-Forwarded-Prefix
    sticky_header: str | None = None
    credentials: CredentialCache = field(default_factory=CredentialCache)
    # Bearer JWTs: without a policy, members of `group` (the deployment's group) may call.
    group: str | None = None
    policy: RoutePolicy | None = None

    def admits(self, user: str, groups: frozenset[str]) -> bool:
        """Whether a valid bearer token's user and groups may call this deployment."""
        if self.policy is None:
            return self.group is not None and self.group in groups
        return user in self.policy.users or not self.policy.groups.isdisjoint(groups)

    @property
    def serving(self) -> list[PredictorRoute]:
        """The predictors that answer requests (traffic > 0), in spec order."""
        return [p for p in self.predictors if not p.shadow and p.traffic > 0]

    @property
    def shadow(self) -> PredictorRoute | None:
        """The predictor that gets a copy of each prediction, if any."""
        return next((p for p in self.predictors if p.shadow), None)

    @property
    def replicas(self) -> list[Replica]:
        """Every replica of the answering predictors."""
        return [r for p in self.serving for r in p.replicas]

    def predictor(self, name: str) -> PredictorRoute | None:
        """The predictor called `name`, shadow included."""
        return next((p for p in self.predictors if p.name == name), None)

    def choose(self, sticky: str | None = None) -> PredictorRoute | None:
        """The predictor to answer a request; None when the deployment has none.

        With a sticky value (the stickyHeader's), the value's hash picks a predictor by the
        weights, so the same value goes to the same predictor while the weights stay. Otherwise
        (or when that predictor cannot take requests) a smooth weighted round-robin among the
        available predictors keeps the split exact over every hundred requests. When none is
        available, the choice is among all, so the answer can name the predictor it lacks.
        """
        serving = self.serving
        if len(serving) <= 1:
            return serving[0] if serving else None
        if sticky is not None:
            point = sticky_point(sticky)
            for predictor in serving:
                point -= predictor.traffic
                if point < 0:
                    if predictor.takes_requests:
                        return predictor
                    break
        # A predictor at zero replicas that wakes on demand keeps its share: its requests are
        # held while it starts (were they sent elsewhere, it would never see one and wake).
        pool = [p for p in serving if p.takes_requests] or serving
        if len(pool) == 1:
            return pool[0]
        total = 0
        best = pool[0]
        for predictor in pool:
            predictor._current += predictor.traffic
            total += predictor.traffic
            if predictor._current > best._current:
                best = predictor
        best._current -= total
        return best

    def unavailable_reason(self) -> str:
        """The 503 text for a deployment without a ready replica."""
        phase = self.phase or "Unknown"
        detail = f"{phase}: {self.message}" if self.message else phase
        return f"deployment '{self.id}' has no ready replica (phase: {detail})"


def sticky_point(value: str) -> int:
    """A stable point in [0, 100) for a sticky header value (the same in every process)."""
    digest = hashlib.blake2b(value.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 100


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise RouteError(message)


def _parse_replica(owner: str, default_name: str, index: int, raw: Any) -> Replica:
    where = f"{owner}.replicas[{index}]"
    _require(isinstance(raw, dict), f"{where} must be an object")
    name = raw.get("name", f"{default_name}-{index}")
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


def _parse_policy(dep_id: str, raw: Any) -> RoutePolicy | None:
    where = f"deployments.{dep_id}.policy"
    if raw is None:
        return None
    _require(isinstance(raw, dict), f"{where} must be null or an object of users and groups")
    unknown = sorted(str(k)[:40] for k in raw if k not in ("users", "groups"))
    _require(not unknown, f"{where}: unknown keys {', '.join(unknown)}")
    users = raw.get("users", [])
    groups = raw.get("groups", [])
    for what, names in (("users", users), ("groups", groups)):
        _require(
            isinstance(names, list) and len(names) <= MAX_POLICY_ENTRIES,
            f"{where}.{what} must be a list of at most {MAX_POLICY_ENTRIES} names",
        )
    _require(
        all(
            isinstance(u, str) and 0 < len(u) <= MAX_POLICY_USER and u.isprintable() for u in users
        ),
        f"{where}.users must be 1-{MAX_POLICY_USER} printable characters each",
    )
    _require(
        all(isinstance(g, str) and GROUP_NAME.fullmatch(g) is not None for g in groups),
        f"{where}.groups must be group names (letters, digits, '-', '_', '.')",
    )
    return RoutePolicy(users=frozenset(users), groups=frozenset(groups))


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
    sticky = raw.get("stickyHeader")
    _require(
        sticky is None or (isinstance(sticky, str) and HEADER_NAME.fullmatch(sticky) is not None),
        f"{where}.stickyHeader must be null or a header name (letters, digits and '-', at most 63)",
    )
    group = raw.get("group")
    _require(
        group is None or (isinstance(group, str) and GROUP_NAME.fullmatch(group) is not None),
        f"{where}.group must be null or a group name",
    )
    return Route(
        id=dep_id,
        phase=phase,
        message=message,
        private=access == "private",
        clients=_parse_clients(dep_id, raw.get("clients")),
        predictors=_parse_predictors(dep_id, raw),
        prefix_raw=f"/deployment/{dep_id}".encode("ascii"),
        sticky_header=sticky,
        group=group,
        policy=_parse_policy(dep_id, raw.get("policy")),
    )


def _parse_predictors(dep_id: str, raw: dict[str, Any]) -> list[PredictorRoute]:
    where = f"deployments.{dep_id}"
    if "predictors" not in raw:
        # A table without predictors (hand-written, or an older engine's): one predictor.
        replicas_raw = raw.get("replicas", [])
        _require(isinstance(replicas_raw, list), f"{where}.replicas must be a list")
        replicas = [_parse_replica(where, dep_id, i, r) for i, r in enumerate(replicas_raw)]
        return [PredictorRoute(DEFAULT_PREDICTOR, 100, False, replicas)]
    _require("replicas" not in raw, f"{where}: give predictors[].replicas, not replicas too")
    items = raw["predictors"]
    _require(
        isinstance(items, list) and len(items) <= MAX_PREDICTORS,
        f"{where}.predictors must be a list of at most {MAX_PREDICTORS} predictors",
    )
    predictors = [_parse_predictor(dep_id, i, item) for i, item in enumerate(items)]
    names = [p.name for p in predictors]
    repeated = sorted({n for n in names if names.count(n) > 1})
    _require(not repeated, f"{where}.predictors: names must be unique ({', '.join(repeated)})")
    shadows = [p.name for p in predictors if p.shadow]
    _require(len(shadows) <= 1, f"{where}.predictors: at most one shadow ({', '.join(shadows)})")
    answering = [p for p in predictors if not p.shadow]
    _require(
        not shadows or bool(answering),
        f"{where}.predictors: a shadow needs a predictor that answers",
    )
    missing = [items[i] for i, p in enumerate(predictors) if not p.shadow and p.traffic < 0]
    if len(answering) == 1 and missing:
        answering[0].traffic = 100  # the only answering predictor may leave traffic out
    else:
        _require(
            not missing,
            f"{where}.predictors: traffic is required when several predictors answer",
        )
    total = sum(p.traffic for p in answering)
    _require(
        not answering or total == 100,
        f"{where}.predictors: traffic of the non-shadow predictors must sum to 100 (got {total})",
    )
    return predictors


def _parse_predictor(dep_id: str, index: int, raw: Any) -> PredictorRoute:
    where = f"deployments.{dep_id}.predictors[{index}]"
    _require(isinstance(raw, dict), f"{where} must be an object")
    name = raw.get("name")
    _require(
        isinstance(name, str) and PREDICTOR_NAME.fullmatch(name) is not None,
        f"{where}.name must be 1-63 letters, digits, '-', '_' or '.', starting and ending "
        "with a letter or digit",
    )
    shadow = raw.get("shadow", False)
    _require(isinstance(shadow, bool), f"{where}.shadow must be true or false")
    traffic = raw.get("traffic")
    _require(
        traffic is None
        or (isinstance(traffic, int) and not isinstance(traffic, bool) and 0 <= traffic <= 100),
        f"{where}.traffic must be an integer percent (0-100)",
    )
    _require(not (shadow and traffic), f"{where}: a shadow gets a copy of requests, not traffic")
    texts = {key: raw.get(key, "") for key in ("phase", "message")}
    for key, value in texts.items():
        _require(isinstance(value, str), f"{where}.{key} must be a string")
    replicas_raw = raw.get("replicas", [])
    _require(isinstance(replicas_raw, list), f"{where}.replicas must be a list")
    replicas = [_parse_replica(where, name, i, r) for i, r in enumerate(replicas_raw)]
    hold = raw.get("hold", False)
    _require(isinstance(hold, bool), f"{where}.hold must be true or false")
    return PredictorRoute(
        hold=hold,
        name=name,
        # -1: not given (allowed for the only answering predictor); a shadow's is 0.
        traffic=0 if shadow else (-1 if traffic is None else traffic),
        shadow=shadow,
        replicas=replicas,
        phase=texts["phase"],
        message=texts["message"],
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
    token stops working with the update. Each predictor keeps its load (in-flight count and
    counters) under its name; round-robin positions and down-marks survive so that an update
    under load keeps spreading traffic evenly; the weighted choice restarts when weights change.
    """
    for dep_id, route in new.items():
        previous = old.get(dep_id)
        if previous is None:
            continue
        if previous.clients == route.clients and previous.private == route.private:
            route.credentials = previous.credentials
        weights = [(p.name, p.traffic) for p in route.predictors]
        same_weights = weights == [(p.name, p.traffic) for p in previous.predictors]
        for predictor in route.predictors:
            before = previous.predictor(predictor.name)
            if before is None:
                continue
            predictor.load = before.load
            if same_weights:
                predictor._current = before._current
            if predictor.replicas:
                predictor._next = before._next % len(predictor.replicas)
            known = {(r.name, r.url): r.down_until for r in before.replicas}
            for replica in predictor.replicas:
                replica.down_until = known.get((replica.name, replica.url), 0.0)
