"""The DeploymentPanel's create/update form, and the small widget helpers its views share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as w

from .client import Client, PrimeHubError
from .deployment import looks_like_model, package_for_deploy
from .display import esc
from .options import policy_patch
from .words import (
    in_words,
)

SOURCES = ("Model URI", "Model image", "Notebook variable")


def button(description: str = "", **options: Any) -> w.Button:
    """A button as wide as its label (the default width cut "Create deployment" short)."""
    options.setdefault("layout", w.Layout(width="auto", min_width="fit-content"))
    return w.Button(description=description, **options)


# A description as wide as its words (the default width cut "View revision" short).
LABEL_FITS = {"description_width": "initial"}


def pairs(values: dict[str, str]) -> str:
    """`k=v, k2=v2`: metadata on one line."""
    return ", ".join(f"{k}={v}" for k, v in values.items())


def error_html(message: str) -> str:
    """A red line saying what went wrong."""
    return f"<div class='ph-error' style='color:#c62828;font-weight:600'>{esc(message)}</div>"


class MetadataRows(w.VBox):
    """Key/value rows with add and remove buttons."""

    def __init__(self, values: dict[str, str] | None = None) -> None:
        self.add_button = button(description="Add metadata", icon="plus")
        self.add_button.on_click(lambda _: self.add_row())
        self.rows: list[w.HBox] = []
        super().__init__([self.add_button])
        for key, value in (values or {}).items():
            self.add_row(key, value)

    def add_row(self, key: str = "", value: str = "") -> w.HBox:
        key_box = w.Text(value=key, placeholder="key", layout=w.Layout(width="180px"))
        value_box = w.Text(value=value, placeholder="value", layout=w.Layout(width="260px"))
        remove = w.Button(icon="trash", tooltip="Remove", layout=w.Layout(width="40px"))
        row = w.HBox([key_box, value_box, remove])
        remove.on_click(lambda _: self.remove_row(row))
        self.rows.append(row)
        self.children = (*self.rows, self.add_button)
        return row

    def remove_row(self, row: w.HBox) -> None:
        self.rows.remove(row)
        self.children = (*self.rows, self.add_button)

    @property
    def value(self) -> dict[str, str]:
        pairs = ((r.children[0].value.strip(), r.children[1].value) for r in self.rows)
        return {k: v for k, v in pairs if k}


class DeploymentForm(w.VBox):
    """Create a deployment, or update one (then group, name and id are locked)."""

    def __init__(
        self,
        client: Client,
        namespace: dict[str, Any],
        on_done: Callable[[str], Any],
        on_cancel: Callable[[], Any],
        existing: dict[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.on_done = on_done
        self.existing = existing
        groups = [g for g in client.groups() if g["enabledDeployment"] or existing]
        self._groups = {g["name"]: g for g in groups}
        spec = existing["spec"] if existing else {}
        predictor = spec.get("predictors", [{}])[0]
        label = {"style": {"description_width": "140px"}, "layout": w.Layout(width="520px")}
        self.group = w.Dropdown(
            options=list(self._groups),
            description="Group",
            value=spec.get("groupName") or next(iter(self._groups), None),
            **label,
        )
        self.instance_type = w.Dropdown(description="Instance type", **label)
        self.replicas = w.BoundedIntText(
            value=predictor.get("replicas", 1), min=1, max=64, description="Replicas", **label
        )
        self.name = w.Text(value=spec.get("displayName", ""), description="Name", **label)
        self.deployment_id = w.Text(
            value=existing["id"] if existing else "",
            placeholder="generated from the name",
            description="ID",
            **label,
        )
        source = (
            "Model image"
            if predictor.get("modelImage") and not predictor.get("modelURI")
            else "Model URI"
        )
        self.source = w.ToggleButtons(options=SOURCES, value=source, description="Model")
        self.model_uri = w.Text(
            value=predictor.get("modelURI") or "", description="Model URI", **label
        )
        self.model_image = w.Text(
            value=predictor.get("modelImage") or "", description="Model image", **label
        )
        candidates = sorted(
            k for k, v in namespace.items() if not k.startswith("_") and looks_like_model(v)
        )
        self.variable = w.Dropdown(options=candidates, description="Variable", **label)
        self.pull_secret = w.Text(
            value=predictor.get("imagePullSecret") or "", description="Image pull secret", **label
        )
        self.description = w.Textarea(
            value=spec.get("description", ""), description="Description", **label
        )
        self.metadata = MetadataRows(predictor.get("metadata"))
        self.private = w.Checkbox(
            value=spec.get("endpoint", {}).get("accessType") == "private",
            description="Private access (clients need a token)",
        )
        # Who may call with a bearer token (beside the clients): where the access type is.
        policy = spec.get("endpoint", {}).get("policy") or {}
        self.policy_groups = w.Text(
            value=", ".join(policy.get("groups") or []),
            placeholder="default: members of the deployment's group",
            description="Policy groups",
            **label,
        )
        self.policy_users = w.Text(
            value=", ".join(policy.get("users") or []),
            placeholder="comma-separated user names",
            description="Policy users",
            **label,
        )
        self.policy_box = w.VBox([self.policy_groups, self.policy_users])
        self.private.observe(lambda _: self._show_policy(), "value")
        self.update_message = w.Text(description="Update message", **label)
        self.submit = button(
            description="Update" if existing else "Deploy", button_style="primary", icon="rocket"
        )
        self.cancel = button(description="Cancel")
        self.errors = w.HTML()
        self.field_errors: dict[str, w.HTML] = {}
        self.submit.on_click(lambda _: self._submit())
        self.cancel.on_click(lambda _: on_cancel())
        self.group.observe(lambda _: self._instance_types(), "value")
        self.source.observe(lambda _: self._show_source(), "value")
        self.locked_note = w.HTML()
        if existing:
            for locked in (self.group, self.name, self.deployment_id):
                locked.disabled = True
            self.locked_note.value = (
                "<div class='ph-locked-note' style='opacity:0.8;font-style:italic'>Group, Name "
                "and ID are fixed once a deployment is created (greyed out); create a new "
                "deployment to change them.</div>"
            )
        self._instance_types(predictor.get("instanceType"))
        title = f"Update {esc(existing['id'])}" if existing else "Create a deployment"
        self._source_box = w.VBox()
        fields = [
            self.locked_note, self.group, self.instance_type, self.replicas, self.name,
            self.deployment_id, self.source, self._source_box, self.description,
            w.HTML("<b>Metadata</b>"), self.metadata, self.private, self.policy_box,
            self.update_message,
        ]  # fmt: skip
        super().__init__([w.HTML(f"<h3>{title}</h3>"), *fields, self.errors,
                          w.HBox([self.submit, self.cancel])])  # fmt: skip
        self._show_source()
        self._show_policy()

    def _show_policy(self) -> None:
        # A policy means nothing for a public endpoint: shown only with private access.
        self.policy_box.layout.display = "" if self.private.value else "none"

    def _endpoint(self) -> dict[str, Any]:
        """The endpoint fields the form sets: the access type, and the policy when private."""
        if not self.private.value:
            return {"accessType": "public"}
        policy = policy_patch(self.policy_groups.value, self.policy_users.value) or {}
        return {"accessType": "private", **policy}

    def _instance_types(self, keep: str | None = None) -> None:
        group = self._groups.get(self.group.value or "")
        names = [it["name"] for it in (group or {}).get("instanceTypes", [])]
        current = keep or self.instance_type.value
        self.instance_type.options = names
        self.instance_type.value = current if current in names else (names[0] if names else None)

    def _show_source(self) -> None:
        chosen = {
            "Model URI": self.model_uri,
            "Model image": self.model_image,
            "Notebook variable": self.variable,
        }[self.source.value]
        # An image pull secret only means something for a container image.
        image = self.source.value == "Model image"
        self._source_box.children = [chosen, self.pull_secret] if image else [chosen]

    def _predictor(self) -> dict[str, Any]:
        predictor: dict[str, Any] = {
            "instanceType": self.instance_type.value,
            "replicas": self.replicas.value,
            "metadata": self.metadata.value,
            "imagePullSecret": None,
        }
        if self.source.value == "Notebook variable":
            if not self.variable.value:
                raise ValueError("choose a notebook variable holding a model")
            model = self.namespace[self.variable.value]
            predictor["modelURI"] = package_for_deploy(
                model, self.name.value or self.variable.value
            )
            predictor["modelImage"] = None
        elif self.source.value == "Model image":
            predictor["modelImage"] = self.model_image.value.strip() or None
            predictor["modelURI"] = None
            predictor["imagePullSecret"] = self.pull_secret.value.strip() or None
        else:
            uri = self.model_uri.value.strip()
            if uri and "://" not in uri and not Path(uri).is_absolute():
                uri = str(Path(uri).resolve())  # relative to the notebook, not the server
            predictor["modelURI"] = uri or None
            predictor["modelImage"] = None
        return predictor

    def _submit(self) -> None:
        self.errors.value = ""
        if not self.group.value or not self.instance_type.value:
            self.errors.value = error_html(
                "choose a group with model deployment enabled and an instance type"
            )
            return
        try:
            predictor = self._predictor()
            if self.existing:
                patch = {
                    "description": self.description.value,
                    "endpoint": self._endpoint(),
                    "predictors": [predictor],
                }
                result = self.client.update(
                    self.existing["id"], patch, update_message=self.update_message.value or None
                )
            else:
                spec = {
                    "displayName": self.name.value.strip(),
                    "groupName": self.group.value,
                    "description": self.description.value,
                    "endpoint": self._endpoint(),
                    "predictors": [predictor],
                }
                if self.update_message.value.strip():
                    spec["updateMessage"] = self.update_message.value.strip()
                result = self.client.create(spec, id=self.deployment_id.value.strip() or None)
        except PrimeHubError as error:
            self.errors.value = error_html(in_words(error.message, error.details))
            return
        except (ValueError, TypeError, OSError) as error:
            self.errors.value = error_html(str(error))
            return
        self.on_done(result["id"])
