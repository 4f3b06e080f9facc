"""The DeploymentPanel driven through its widgets (values set, buttons clicked), real server."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from primehub_jupyter.core.charts import CHART_IDS
from primehub_jupyter.core.errors import FEATURE_DISABLED_MESSAGE
from primehub_jupyter.kernel.client import Client
from primehub_jupyter.kernel.panel import DeploymentPanel

from .conftest import GROUPS, OWNER
from .test_cli import Server


def serve_with(root: Path, groups: dict[str, Any]) -> Server:
    (root / "groups.yaml").write_text(yaml.safe_dump(groups, sort_keys=False))
    server = Server(
        root / "data",
        root / "serve.log",
        f"--PrimeHubApp.groups_file={root / 'groups.yaml'}",
        f"--PrimeHubApp.owner={OWNER}",
        "--LocalEngine.metrics_interval=0.5",
    )
    server.start()
    return server


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    server = serve_with(tmp_path_factory.mktemp("panel"), GROUPS)
    yield server
    server.stop()


@pytest.fixture
def client(served: Server) -> Client:
    return Client(served.url, served.token)


def until(predicate: Any, what: str, limit: float = 60) -> Any:
    """Poll; the limit only bounds a hang."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def widget_text(widget: Any) -> str:
    """Every string value in a widget tree (what a person could see)."""
    parts = []
    stack = [widget]
    while stack:
        node = stack.pop()
        for name in ("value", "description", "placeholder"):
            value = getattr(node, name, None)
            if isinstance(value, str):
                parts.append(value)
        stack.extend(getattr(node, "children", ()) or ())
    return "\n".join(parts)


def phase_of(detail: Any) -> str:
    detail.refresh()
    return detail.data["status"]["phase"]


def test_create_inspect_update_clients_stop_delete(client: Client, models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # bundles of notebook variables go next to the "notebook"
    panel = DeploymentPanel(client, refresh_seconds=0, namespace={"clf": models["v1"], "n": 3})
    form = panel.show_create()
    assert form is not None and panel.view is form
    # Enabled groups only; alice is an admin, so team-c too, but not the disabled research.
    assert list(form.group.options) == ["default", "small", "team-c"]
    form.group.value = "default"
    assert {"cpu-2", "cpu-0.5", "cpu-1"} == set(form.instance_type.options)
    form.source.value = "Notebook variable"
    assert list(form.variable.options) == ["clf"]  # only what looks like a model
    form.variable.value = "clf"
    form.name.value = "Panel iris"
    form.instance_type.value = "cpu-0.5"
    form.metadata.add_row("owner", "panel")
    form.description.value = "made in the panel"
    form.submit.click()
    detail = panel.detail
    assert detail is not None and panel.view is detail, form.errors.value
    deployment_id = detail.deployment_id
    until(lambda: phase_of(detail) == "Deployed", "Deployed")
    info = detail.info.value
    assert "Deployed" in info and "made in the panel" in info and "owner=panel" in info
    assert "Run an Example" in info and "curl -X POST" in info
    endpoint = detail.data["status"]["endpoint"]
    assert requests.post(endpoint, json={"data": {"ndarray": [[1, 2, 3, 4]]}}, timeout=30).ok

    detail.tabs.selected_index = 1  # Logs
    assert "replica ready" in detail.logs_view.value
    assert [v for _, v in detail.replica.options][1:] == client.replicas(deployment_id)
    assert "download=1" in detail.logs_note.value
    detail.logs_save.click()
    assert (tmp_path / f"{deployment_id}.log").stat().st_size > 0

    # Update: group, name and id are locked; make it private.
    detail.update_button.click()
    update = panel.form
    assert update is not None and update.group.disabled and update.name.disabled
    assert update.deployment_id.disabled and update.deployment_id.value == deployment_id
    update.private.value = True
    update.update_message.value = "go private"
    update.submit.click()
    detail = panel.detail
    assert detail is not None, update.errors.value
    detail.tabs.selected_index = 2  # History
    assert "go private" in detail.history_view.value
    detail.revision.value = 1
    assert "made in the panel" in detail.revision_view.value

    detail.tabs.selected_index = 3  # Clients
    detail.client_name.value = "svc"
    detail.add_client.click()
    token = detail.token_box.value.split("<code>")[1].split("</code>")[0]
    assert len(token) > 30 and "never be shown again" in detail.token_box.value
    assert "svc" in widget_text(detail.clients_view)
    good = {"data": {"ndarray": [[1, 2, 3, 4]]}}
    assert requests.post(endpoint, json=good, auth=("svc", token), timeout=30).ok
    assert requests.post(endpoint, json=good, timeout=30).status_code == 401
    # Leave and come back: the token is gone for good.
    detail.back.click()
    assert token not in widget_text(panel)
    again = panel.show_detail(deployment_id)
    again.tabs.selected_index = 3
    assert token not in widget_text(panel) and "svc" in widget_text(again.clients_view)

    again.tabs.selected_index = 4  # Metrics
    again.load_metrics()
    (shown,) = again.metrics_view.outputs
    spec = shown["data"]["application/vnd.vegalite.v5+json"]  # JupyterLab's Vega renderer
    assert [c["name"] for c in spec["concat"]] == list(CHART_IDS)
    assert "requests" in shown["data"]["text/plain"]

    again.stop_button.click()
    until(lambda: phase_of(again) == "Stopped", "Stopped")
    assert again.start_button.layout.display is None and again.stop_button.layout.display == "none"
    again.start_button.click()
    until(lambda: phase_of(again) == "Deployed", "Deployed")

    again.delete_button.click()
    assert "Delete" in widget_text(again.confirm)
    again.confirm.children[2].click()  # Cancel
    assert again.confirm.children == () and client.get(deployment_id)
    again.delete_button.click()
    again.confirm.children[1].click()  # Yes, delete
    assert panel.view is panel.list_view and deployment_id not in panel.rows
    panel.close()


def test_list_colours_search_and_mine(client: Client, bundles):
    def create(name: str, bundle: Path) -> dict[str, Any]:
        predictor = {"instanceType": "cpu-0.5", "modelURI": str(bundle)}
        return client.create(
            {"displayName": name, "groupName": "default", "predictors": [predictor]}
        )

    good, broken = create("Alpha", bundles["v1"]), create("Broken", bundles["broken"])
    client.wait(good["id"])
    panel = DeploymentPanel(client, refresh_seconds=0)

    def failed() -> bool:
        panel.refresh()
        return panel.rows[broken["id"]].phase == "Failed"

    until(failed, "Failed")
    assert "#2e7d32" in panel.rows[good["id"]].layout.border_left  # green
    assert "#c62828" in panel.rows[broken["id"]].layout.border_left  # red
    endpoint = client.get(good["id"])["status"]["endpoint"]
    row_html = panel.rows[good["id"]].endpoint.value
    assert "navigator.clipboard.writeText" in row_html and f"title='{endpoint}'" in row_html
    panel.search.value = "alpha"
    assert list(panel.rows) == [good["id"]]
    panel.search.value = ""
    panel.mine.value = True
    assert {good["id"], broken["id"]} <= set(panel.rows)
    panel.rows[good["id"]].metadata_button.value = True
    assert "no metadata" in panel.rows[good["id"]].metadata_view.value
    panel.rows[good["id"]].open_button.click()
    assert panel.detail is not None and panel.detail.deployment_id == good["id"]
    panel.close()
    for d in (good, broken):
        client.delete(d["id"])


def test_create_errors_show_in_the_form(client: Client):
    panel = DeploymentPanel(client, refresh_seconds=0)
    form = panel.show_create()
    assert form is not None
    form.name.value = "Bad"
    form.model_uri.value = "/nowhere/at/all"
    form.submit.click()
    assert "model URI cannot be used" in form.errors.value and panel.view is form
    form.model_uri.value = ""
    form.submit.click()
    assert "modelURI" in form.errors.value
    form.cancel.click()
    assert panel.view is panel.list_view
    panel.close()


def test_disabled_group_message_and_auto_refresh_stops_on_close(tmp_path: Path):
    # A user whose only group has deployment disabled: nothing to pick, and PrimeHub's message.
    only = [g for g in GROUPS["groups"] if g["name"] in ("everyone", "research")]
    other = serve_with(tmp_path, {**GROUPS, "groups": only})
    try:
        client = Client(other.url, other.token)
        panel = DeploymentPanel(client, refresh_seconds=0.2)
        form = panel.show_create()
        assert form is not None and list(form.group.options) == []
        spec = {"displayName": "x", "groupName": "research",
                "predictors": [{"instanceType": "cpu-0.5", "modelURI": "/tmp"}]}  # fmt: skip
        with pytest.raises(Exception) as error:
            client.create(spec)
        assert getattr(error.value, "message", "") == FEATURE_DISABLED_MESSAGE
        panel.show_list()
        start = panel.refreshes
        until(lambda: panel.refreshes >= start + 3, "automatic refreshes")
        assert panel.auto_refreshing
        panel.close()
        assert not panel.auto_refreshing
        stopped_at = panel.refreshes
        time.sleep(0.6)
        assert panel.refreshes == stopped_at
    finally:
        other.stop()


def test_the_panel_shows_changes_made_elsewhere_at_once(served: Server, bundles):
    # Polling once a minute: only the change stream can bring the new row this soon.
    panel = DeploymentPanel(Client(served.url, served.token), refresh_seconds=60)
    other = Client(served.url, served.token)
    try:
        until(lambda: panel.live, "the panel's change stream", limit=30)
        created = other.create({
            "displayName": "Pushed to the panel", "groupName": "default",
            "predictors": [{"instanceType": "cpu-0.5", "modelURI": str(bundles["v1"])}],
        })  # fmt: skip
        until(lambda: created["id"] in panel.rows, "the new row", limit=10)
        other.delete(created["id"])
        until(lambda: created["id"] not in panel.rows, "the row gone", limit=15)
    finally:
        panel.close()
    assert not panel.auto_refreshing and not panel._listener.is_alive()
