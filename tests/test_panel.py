"""The DeploymentPanel driven through its widgets (values set, buttons clicked), real server."""

from __future__ import annotations

import re
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
from .serve_helpers import Serve as Server


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
    assert "Stop" in widget_text(again.confirm)  # asks first, like Delete
    again.confirm.children[1].click()  # Yes, stop
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
        # close() joined both threads that refresh (the timer, checked above, and the event
        # listener): no refresh can come after it, so there is nothing to wait for.
        assert panel._listener is None or not panel._listener.is_alive()
    finally:
        other.stop()


def all_widgets(root: Any) -> list[Any]:
    """Every widget of a tree."""
    found, stack = [], [root]
    while stack:
        node = stack.pop()
        found.append(node)
        stack.extend(getattr(node, "children", ()) or ())
    return found


def test_confirmations_rollback_preview_words_and_polish(
    client: Client, bundles, tmp_path, monkeypatch
):
    """Issue 13 (items 3, 7, 8 and the polish list), driven through the panel's widgets."""
    import ipywidgets as w

    from primehub_jupyter.kernel.display import PHASE_COLORS

    monkeypatch.chdir(tmp_path)
    panel = DeploymentPanel(client, refresh_seconds=0)
    form = panel.show_create()
    assert form is not None
    # The image pull secret only shows for a container image; Update Message is there on create.
    assert form.pull_secret not in all_widgets(form) and form.update_message in all_widgets(form)
    form.source.value = "Model image"
    assert form.pull_secret in all_widgets(form)
    form.source.value = "Model URI"
    assert form.pull_secret not in all_widgets(form)
    form.name.value = "Panel words"
    form.model_uri.value = str(bundles["v1"])
    form.update_message.value = "first version"
    form.submit.click()
    detail = panel.detail
    assert detail is not None, form.errors.value
    deployment_id = detail.deployment_id
    assert client.history(deployment_id)[-1]["updateMessage"] == "first version"
    client.update(deployment_id, {"predictors": [{"replicas": 2}]}, update_message="scale out")
    detail.refresh()

    # Stop asks first; Cancel leaves it running.
    detail.stop_button.click()
    assert "Yes, stop" in widget_text(detail.confirm)
    detail.confirm.children[2].click()  # Cancel
    assert detail.confirm.children == () and not client.get(deployment_id)["spec"]["stop"]
    detail.stop_button.click()
    detail.confirm.children[1].click()  # Yes, stop
    assert client.get(deployment_id)["spec"]["stop"] is True

    # History in PrimeHub's words, times local with the ISO UTC time in the tooltip.
    detail.tabs.selected_index = 2
    table = detail.history_view.value
    for header in ("Deployment Stopped", "Replicas", "Model Image / URI", "Update Message"):
        assert f">{header}<" in table, table
    assert "predictors" not in table and "scale out" in table and ">Yes<" in table
    assert re.search(r'class="ph-time" title="20[-0-9]+T[:0-9]+Z"', table), table
    assert detail.revision.description == "View revision"
    assert detail.revision.style.description_width == "initial"  # not cut to "View revis..."
    detail.revision.value = 1
    assert "Model URI" in detail.revision_view.value
    assert "predictors" not in detail.revision_view.value

    # Roll back previews its changes in words, asks, and keeps the deployment stopped.
    detail.rollback_button.click()
    preview = widget_text(detail.confirm)
    assert "Yes, roll back" in preview and "ph-rollback-preview" in preview
    assert "<td style='text-align:left'>Replicas</td><td style='text-align:left'>2</td>" \
        "<td style='text-align:left'>1</td>" in preview  # fmt: skip
    assert "Deployment Stopped" not in preview  # a roll back neither starts nor stops
    detail.confirm.children[2].click()  # Cancel
    assert client.get(deployment_id)["spec"]["predictors"][0]["replicas"] == 2
    detail.rollback_button.click()
    detail.confirm.children[1].click()  # Yes, roll back
    after = client.get(deployment_id)
    assert after["spec"]["predictors"][0]["replicas"] == 1 and after["spec"]["stop"] is True
    assert after["status"]["history"][0]["updateMessage"] == "rollback to revision 1"

    # Locked update fields say why; buttons fit their labels; one colour per phase.
    detail.update_button.click()
    update = panel.form
    assert update is not None and "fixed once a deployment is created" in update.locked_note.value
    assert all(
        b.layout.width in ("auto", "40px")
        for b in all_widgets(panel) + all_widgets(panel.list_view)
        if isinstance(b, w.Button)
    )
    assert panel.create_button.layout.width == "auto"  # "Create deployment", not "Create deplo..."
    assert PHASE_COLORS["Stopping"] == PHASE_COLORS["Deploying"]  # as in the sidebar

    # The list row: local time with the zone, the endpoint cut in its middle, never the id.
    update.cancel.click()
    panel.show_list()
    client.start(deployment_id)
    client.wait(deployment_id)
    panel.refresh()
    row = panel.rows[deployment_id]
    assert 'class="ph-time"' in row.summary.value
    assert deployment_id in row.endpoint.value.split(">", 1)[1]

    # A replica's log is saved as <replica>.log, not <id>-<id>-0.log.
    detail = panel.show_detail(deployment_id)
    detail.tabs.selected_index = 1
    replica = client.replicas(deployment_id)[0]
    detail.replica.value = replica
    detail.logs_save.click()
    assert replica.startswith(deployment_id) and (tmp_path / f"{replica}.log").exists()
    panel.close()
    client.delete(deployment_id)


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
