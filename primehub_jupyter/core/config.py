"""Groups, instance types, quota and admins from one YAML document, reloaded when it changes."""

from __future__ import annotations

import getpass
import os
import re
import threading
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import FeatureDisabled, Forbidden, NotFound
from .errors import ValidationError as InvalidInput
from .models import ResourceName, describe_problems, pydantic_problems

GLOBAL_GROUP = "everyone"

_MEMORY = re.compile(r"([0-9]*\.?[0-9]+)\s*([KMGTPE]i?|[kmgtpe]|)B?")
_MEMORY_FACTORS = {
    "": 1,
    "k": 1000,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "P": 1000**5,
    "E": 1000**6,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "Pi": 1024**5,
    "Ei": 1024**6,
}


def parse_cpu(value: Any) -> float:
    """Kubernetes CPU quantity ('500m', '1.5', 2) to cores."""
    text = str(value).strip()
    try:
        if text.endswith("m"):
            return float(text[:-1]) / 1000
        return float(text)
    except ValueError:
        raise ValueError(f"'{value}' is not a CPU quantity (e.g. 0.5, 500m, 2)") from None


def parse_memory(value: Any) -> int:
    """Kubernetes memory quantity ('512Mi', '1G', 1073741824) to bytes."""
    match = _MEMORY.fullmatch(str(value).strip())
    if not match:
        raise ValueError(f"'{value}' is not a memory quantity (e.g. 512Mi, 1Gi, 2G)")
    number, unit = match.groups()
    factor = _MEMORY_FACTORS.get(unit) or _MEMORY_FACTORS.get(unit.upper(), 1)
    return int(float(number) * factor)


def format_memory(value: float) -> str:
    """Bytes to the shortest exact-ish binary quantity for messages."""
    for unit, factor in (("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if value >= factor:
            return f"{value / factor:g}{unit}"
    return f"{value:g}"


class _Config(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")


class InstanceType(_Config):
    """A size of replica: what each replica is given and is charged against quota."""

    name: ResourceName
    display_name: str = Field("", alias="displayName")
    description: str = ""
    cpu: float = 1.0
    memory: int = Field(2 * 1024**3)
    gpu: int = 0
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tolerations: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("cpu", mode="before")
    @classmethod
    def _cpu(cls, value: Any) -> float:
        return parse_cpu(value)

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> int:
        return parse_memory(value)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "displayName": self.display_name or self.name,
            "description": self.description,
            "cpu": self.cpu,
            "memory": format_memory(self.memory),
            "gpu": self.gpu,
            "nodeSelector": self.node_selector,
            "tolerations": self.tolerations,
        }


class Quota(_Config):
    """Upper bounds on what a group's running deployments may hold; None means unlimited."""

    cpu: float | None = None
    memory: int | None = None
    gpu: int | None = None
    max_deployments: int | None = Field(None, alias="maxDeployments")

    @field_validator("cpu", mode="before")
    @classmethod
    def _cpu(cls, value: Any) -> float | None:
        return None if value is None else parse_cpu(value)

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> int | None:
        return None if value is None else parse_memory(value)

    def to_json(self) -> dict[str, Any]:
        return {
            "cpu": self.cpu,
            "memory": None if self.memory is None else format_memory(self.memory),
            "gpu": self.gpu,
            "maxDeployments": self.max_deployments,
        }


class Group(_Config):
    """A team: its members, whether it may deploy, its quota and its instance types."""

    name: ResourceName
    display_name: str = Field("", alias="displayName")
    enabled_deployment: bool = Field(False, alias="enabledDeployment")
    members: list[str] = Field(default_factory=list)
    quota: Quota = Field(default_factory=lambda: Quota.model_validate({}))
    instance_types: list[ResourceName] = Field(default_factory=list, alias="instanceTypes")


class PrimeHubConfig(_Config):
    """The whole configuration document."""

    admins: list[str] = Field(default_factory=list)
    instance_types: list[InstanceType] = Field(default_factory=list, alias="instanceTypes")
    groups: list[Group] = Field(default_factory=list)

    def instance_type(self, name: str) -> InstanceType | None:
        return next((it for it in self.instance_types if it.name == name), None)

    def group(self, name: str) -> Group | None:
        return next((g for g in self.groups if g.name == name), None)

    def is_admin(self, user: str) -> bool:
        return user in self.admins

    def user_groups(self, user: str) -> list[Group]:
        """Groups the user may see deployments of (admins see every group)."""
        return [
            g
            for g in self.groups
            if g.name != GLOBAL_GROUP and (user in g.members or self.is_admin(user))
        ]

    def group_instance_types(self, group: Group) -> list[InstanceType]:
        """The group's own instance types plus those of the global group, in order."""
        names = list(group.instance_types)
        everyone = self.group(GLOBAL_GROUP)
        if everyone is not None and group.name != GLOBAL_GROUP:
            names += [n for n in everyone.instance_types if n not in names]
        return [it for it in (self.instance_type(n) for n in names) if it is not None]

    def problem_with(self, group_name: str, instance_type: str) -> str | None:
        """Why a deployment in this group with this instance type cannot run, or None."""
        group = self.group(group_name)
        if group is None or group_name == GLOBAL_GROUP:
            return f"group '{group_name}' not found"
        if not group.enabled_deployment:
            return FeatureDisabled(group_name).message
        if self.instance_type(instance_type) is None:
            return f"instance type '{instance_type}' not found"
        if instance_type not in [it.name for it in self.group_instance_types(group)]:
            return f"instance type '{instance_type}' is not available to group '{group_name}'"
        return None

    def check_member(self, user: str, group_name: str) -> Group:
        """The group, if the user may deploy into it; else the error to answer with."""
        group = self.group(group_name)
        if group is None or group_name == GLOBAL_GROUP:
            raise NotFound(f"group '{group_name}' not found")
        if user not in group.members and not self.is_admin(user):
            raise Forbidden(f"user '{user}' is not a member of group '{group_name}'")
        if not group.enabled_deployment:
            raise FeatureDisabled(group_name)
        return group

    def check_instance_type(self, group: Group, name: str) -> InstanceType:
        """The instance type, if the group may use it; else a validation error."""
        available = [it.name for it in self.group_instance_types(group)]
        if name not in available:
            raise InvalidInput(
                f"instance type '{name}' not found in group '{group.name}'; "
                f"available: {', '.join(available) or 'none'}",
                details=[{"field": "spec.predictors.0.instanceType", "message": "not found"}],
            )
        found = self.instance_type(name)
        assert found is not None
        return found


def default_user() -> str:
    """The person this single-user server belongs to."""
    return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()


def default_config_document(user: str) -> dict[str, Any]:
    """The configuration written on first run: one enabled group holding the current user."""
    return {
        "admins": [user],
        "instanceTypes": [
            {"name": "cpu-0.5", "description": "0.5 CPU, 1 GiB", "cpu": 0.5, "memory": "1Gi"},
            {"name": "cpu-1", "description": "1 CPU, 2 GiB", "cpu": 1, "memory": "2Gi"},
            {"name": "cpu-2", "description": "2 CPU, 4 GiB", "cpu": 2, "memory": "4Gi"},
        ],
        "groups": [
            {"name": GLOBAL_GROUP, "instanceTypes": ["cpu-0.5", "cpu-1", "cpu-2"]},
            {
                "name": "default",
                "displayName": "Default group",
                "enabledDeployment": True,
                "members": [user],
                "quota": {"cpu": 8, "memory": "16Gi", "gpu": 0, "maxDeployments": 20},
                "instanceTypes": [],
            },
        ],
    }


_HEADER = """\
# primehub-jupyter configuration: groups, instance types, quota and admins.
# Edited by hand or through the API (admins); reloaded automatically when it changes.
# Quantities use Kubernetes units: cpu 0.5 or 500m, memory 512Mi or 2Gi.
"""


class ConfigStore:
    """Holds the configuration file: loads it, writes a default, reloads it on change."""

    def __init__(self, path: str | os.PathLike[str], *, user: str | None = None) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._config: PrimeHubConfig | None = None
        if not self.path.exists():
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._write_document(default_config_document(user or default_user()))

    @staticmethod
    def parse(document: Any, source: str = "configuration") -> PrimeHubConfig:
        """Validate a configuration document, with every problem in one message."""
        try:
            config = PrimeHubConfig.model_validate(document or {})
        except ValidationError as error:
            raise InvalidInput(
                f"invalid {source}: {describe_problems(pydantic_problems(error))}"
            ) from None
        known = {it.name for it in config.instance_types}
        for group in config.groups:
            missing = [n for n in group.instance_types if n not in known]
            if missing:
                raise InvalidInput(
                    f"invalid {source}: group '{group.name}' names unknown instance types "
                    f"{', '.join(missing)}"
                )
        return config

    def get(self) -> PrimeHubConfig:
        """The current configuration, re-read if the file changed since the last call."""
        with self._lock:
            mtime = self.path.stat().st_mtime
            if self._config is None or mtime != self._mtime:
                text = self.path.read_text()
                try:
                    document = yaml.safe_load(text)
                except yaml.YAMLError as error:
                    raise InvalidInput(f"invalid configuration {self.path}: {error}") from None
                self._config = self.parse(document, f"configuration {self.path}")
                self._mtime = mtime
            return self._config

    def set_group_enabled(self, name: str, enabled: bool) -> Group:
        """Enable or disable model deployment for a group, persisting the file."""
        with self._lock:
            document = yaml.safe_load(self.path.read_text()) or {}
            for group in document.get("groups", []):
                if group.get("name") == name and name != GLOBAL_GROUP:
                    group["enabledDeployment"] = enabled
                    break
            else:
                raise NotFound(f"group '{name}' not found")
            self.parse(document)
            self._write_document(document)
            self._config = None
        found = self.get().group(name)
        assert found is not None
        return found

    def _write_document(self, document: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(".tmp")
        # Admins and groups are defined here: readable and writable by this user only.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(_HEADER + yaml.safe_dump(document, sort_keys=False))
        os.replace(tmp, self.path)
