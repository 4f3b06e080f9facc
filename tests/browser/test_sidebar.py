"""The Model Deployments sidebar, driven like a person would, against a real jupyter lab."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Page, expect

from .conftest import BUNDLE_DIR, ConsoleLog, Lab, open_page, start_lab, stop_lab

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

#: Bounds on waits for things that happen by themselves (a rollout); they measure nothing.
ROLLOUT = 120_000
SOON = 30_000

FEATURE_DISABLED = (
    "Feature not available - Model Deployment is not enabled for this group. "
    "Please contact your administrator to enable it."
)


def open_sidebar(page: Page) -> Any:
    page.click('li[data-id="primehub-deployments"]')
    sidebar = page.locator("#primehub-deployments")
    expect(sidebar).to_be_visible()
    return sidebar


def field(scope: Any, label: str) -> Any:
    """An input by its label; required fields' labels end with an asterisk."""
    return scope.get_by_label(re.compile(rf"^{re.escape(label)}( \*)?$"))


def confirm_dialog(page: Page, title: str, button: str) -> Any:
    dialog = page.locator(".jp-Dialog")
    expect(dialog.locator(".jp-Dialog-header")).to_contain_text(title)
    body = dialog.locator(".jp-Dialog-body").inner_text()
    dialog.get_by_role("button", name=button, exact=True).click()
    expect(dialog).to_have_count(0)
    return body


def wait_for_workspace(lab: Lab, needle: str, limit: float = 30) -> None:
    """Wait until JupyterLab saved a workspace holding `needle` (it saves with a debounce)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        answer = requests.get(
            f"{lab.url}lab/api/workspaces/default",
            headers={"Authorization": f"token {lab.token}"},
            timeout=10,
        )
        if answer.status_code == 200 and needle in answer.text:
            return
        time.sleep(0.25)
    raise AssertionError(f"the workspace never held {needle!r}")


def test_deployment_journey(page: Page, lab: Lab, console: ConsoleLog, artifacts: Path) -> None:
    sidebar = open_sidebar(page)
    expect(sidebar.get_by_text("No deployments yet.")).to_be_visible(timeout=SOON)

    # Create, first with a model URI the server refuses: its message lands on the field.
    sidebar.get_by_role("button", name="Create a deployment").first.click()
    form = page.locator("form.jp-PrimeHub-form")
    expect(form).to_be_visible()
    group = field(form, "Group")
    expect(group.locator("option")).to_have_text(["default"])  # "research" is not enabled
    field(form, "Deployment name").fill("Iris browser")
    deployment_id = field(form, "Deployment ID").input_value()
    assert re.fullmatch(r"iris-browser-[a-z0-9]{5}", deployment_id), deployment_id
    field(form, "Model URI").fill("no-such-bundle")
    form.get_by_role("button", name="Add metadata").click()
    form.get_by_label("Metadata key 1").fill("owner")
    form.get_by_label("Metadata value 1").fill("browser-test")
    form.get_by_label("Private access").check()
    console.allow_http(422, r"/primehub/api/deployments\?")
    form.get_by_role("button", name="Deploy").click()
    uri_error = form.locator(".jp-PrimeHub-field.jp-mod-invalid")
    expect(uri_error).to_contain_text("model URI cannot be used", timeout=SOON)
    expect(field(form, "Model URI")).to_be_focused()

    field(form, "Model URI").fill(BUNDLE_DIR)
    expect(uri_error).to_have_count(0)
    form.get_by_role("button", name="Deploy").click()

    # The detail view opens; the cell turns green; a notification says so.
    detail = page.locator(f"#primehub-deployment-{deployment_id}")
    expect(detail).to_be_visible(timeout=SOON)
    expect(form).to_have_count(0)
    cell = sidebar.locator(f'li[data-deployment-id="{deployment_id}"]')
    expect(cell).to_have_class(re.compile("jp-PrimeHub-phase-deploying|jp-PrimeHub-phase-deployed"))
    expect(cell).to_have_class(re.compile("jp-PrimeHub-phase-deployed"), timeout=ROLLOUT)
    expect(cell.locator(".jp-PrimeHub-badge")).to_have_text("Deployed")
    expect(cell).to_have_attribute("title", re.compile("owner: browser-test"))
    endpoint = lab.api("GET", f"deployments/{deployment_id}")["status"]["endpoint"]
    expect(cell.locator(".jp-PrimeHub-cell-endpoint")).to_have_attribute(
        "title", re.compile(re.escape(endpoint))
    )
    expect(page.locator(".Toastify__toast").filter(has_text="is Deployed")).to_be_visible(
        timeout=SOON
    )
    expect(detail.locator(".jp-PrimeHub-detail-header .jp-PrimeHub-badge")).to_have_text(
        "Deployed", timeout=SOON
    )
    expect(detail.get_by_role("tab")).to_have_text(
        ["Information", "Logs", "History", "Clients", "Metrics", "Jobs"]
    )
    expect(detail.get_by_label("example curl command", exact=True)).to_contain_text(
        "-u '<client-name>:<client-token>'"
    )

    sidebar.screenshot(path=str(artifacts / "sidebar-list.png"))
    page.screenshot(path=str(artifacts / "detail-information.png"))

    # Click-to-copy on the endpoint of the cell.
    cell.locator(".jp-PrimeHub-cell-endpoint").click()
    expect(cell.locator(".jp-PrimeHub-cell-endpoint")).to_have_text("Endpoint copied")
    assert page.evaluate("navigator.clipboard.readText()") == endpoint

    # Logs: the tail, then following, with a request's access line arriving.
    detail.get_by_role("tab", name="Logs").click()
    log_view = detail.locator(".jp-PrimeHub-log-view")
    expect(log_view).not_to_have_text(re.compile(r"^(No log lines yet\.)?$"), timeout=SOON)
    replicas = detail.get_by_label("Replica", exact=True).locator("option")
    expect(replicas).to_have_count(2, timeout=SOON)  # All replicas + the one replica
    detail.get_by_label("Follow").check()
    expect(detail.locator(".jp-PrimeHub-logs-toolbar")).to_contain_text("following")
    answer = lab.api(
        "POST",
        f"deployments/{deployment_id}/invoke",
        {"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2]]}},
    )
    assert answer["data"]["ndarray"], answer
    expect(log_view).to_contain_text("/api/v1.0/predictions", timeout=SOON)
    page.screenshot(path=str(artifacts / "detail-logs.png"))

    # Clients: the token is shown once, works, and is gone once hidden.
    detail.get_by_role("tab", name="Clients").click()
    expect(detail.get_by_text("No clients yet")).to_be_visible()
    detail.get_by_label("Client name").fill("billing")
    detail.get_by_role("button", name="Add client").click()
    token_box = detail.locator(".jp-PrimeHub-token")
    expect(token_box).to_contain_text("you will not see it again", timeout=SOON)
    token = token_box.locator(".jp-PrimeHub-token-value").inner_text().strip()
    assert len(token) >= 16
    expect(token_box.get_by_role("button", name="Copy the token of billing")).to_be_visible()
    called = requests.post(
        endpoint,
        json={"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2]]}},
        auth=("billing", token),
        timeout=30,
    )
    assert called.status_code == 200, called.text
    assert requests.post(endpoint, json={}, timeout=30).status_code == 401
    page.screenshot(path=str(artifacts / "detail-clients-token.png"))
    token_box.get_by_role("button", name=re.compile("hide the token")).click()
    expect(token_box).to_have_count(0)
    detail.get_by_role("tab", name="Information").click()
    detail.get_by_role("tab", name="Clients").click()
    expect(detail.locator(".jp-PrimeHub-client-list")).to_contain_text("billing")
    assert token not in page.content()

    # Update: group, name and id are locked; the change is confirmed field by field.
    history_before = len(lab.api("GET", f"deployments/{deployment_id}/history")["history"])
    detail.get_by_role("button", name="Update", exact=True).click()
    update_form = page.locator("form.jp-PrimeHub-form")
    expect(update_form).to_be_visible()
    for locked in ("Deployment name", "Deployment ID", "Group"):
        expect(field(update_form, locked)).to_be_disabled()
    field(update_form, "Replicas").fill("2")
    field(update_form, "Update Message").fill("more replicas")
    update_form.get_by_role("button", name="Update", exact=True).click()
    body = confirm_dialog(page, "Update Iris browser?", "Update")
    assert "Replicas" in body and "predictors.0.replicas" not in body, body  # PrimeHub's words
    expect(update_form).to_have_count(0)

    history = detail.get_by_role("table", name="History").locator("tbody tr")
    expect(history).to_have_count(history_before + 1, timeout=SOON)
    expect(history.first).to_contain_text("more replicas")
    history.last.get_by_role("button", name=re.compile("^Compare")).click()
    diff = detail.get_by_role("table", name=re.compile("Differences between revision 1"))
    expect(diff).to_contain_text("Replicas")
    expect(diff).to_contain_text("Clients")
    expect(diff).not_to_contain_text("predictors.0")
    # Roll back to revision 2 (one replica): a new revision, back to the old value.
    history.nth(1).get_by_role("button", name="Roll back to revision 2").click()
    preview = confirm_dialog(page, "Roll back to revision 2?", "Roll back")
    assert "Replicas" in preview, preview  # the roll back shows what it changes
    expect(history).to_have_count(history_before + 2, timeout=SOON)
    expect(history.first).to_contain_text("rollback to revision 2")
    history.nth(1).get_by_role("button", name=re.compile("^View")).click()
    spec_table = detail.get_by_role("table", name=re.compile("Spec of revision"))
    expect(spec_table.locator('tr[data-field="predictors.0.replicas"]')).to_contain_text("2")
    expect(spec_table).not_to_contain_text("predictors.0")
    page.screenshot(path=str(artifacts / "detail-history.png"))
    expect(cell).to_have_class(re.compile("jp-PrimeHub-phase-deployed"), timeout=ROLLOUT)
    expect(detail.locator(".jp-PrimeHub-detail-header .jp-PrimeHub-badge")).to_have_text(
        "Deployed", timeout=ROLLOUT
    )

    # Metrics: charts, or a calm word while the server has no metrics endpoint.
    detail.get_by_role("tab", name="Metrics").click()
    expect(
        detail.locator(".jp-PrimeHub-chart").first.or_(
            detail.get_by_text("Metrics not available yet")
        )
    ).to_be_visible(timeout=SOON)
    page.screenshot(path=str(artifacts / "detail-metrics.png"))

    # Stop, after a confirmation: grey.
    detail.get_by_role("button", name="Stop", exact=True).click()
    confirm_dialog(page, "Stop Iris browser?", "Stop")
    expect(cell).to_have_class(re.compile("jp-PrimeHub-phase-stopped"), timeout=ROLLOUT)
    expect(cell.locator(".jp-PrimeHub-badge")).to_have_text("Stopped")
    expect(detail.get_by_role("button", name="Start", exact=True)).to_be_visible()

    # Delete, after a confirmation: the view closes and the cell goes. A poll of the view or
    # its Metrics tab that is on its way while the DELETE lands gets a 404 (handled: the view
    # says the deployment is gone), which chromium logs as a console error.
    console.allow_http(404, rf"/primehub/api/deployments/{deployment_id}(/|\?|$)")
    detail.get_by_role("button", name="Delete", exact=True).click()
    confirm_dialog(page, "Delete Iris browser?", "Delete")
    expect(detail).to_have_count(0, timeout=SOON)
    expect(cell).to_have_count(0, timeout=SOON)
    assert lab.api("GET", "deployments")["deployments"] == []

    assert console.errors == [], "\n".join(console.errors)


def test_keyboard_palette_dark_theme_and_disabled_group(
    page: Page, lab: Lab, console: ConsoleLog, artifacts: Path
) -> None:
    created = lab.api(
        "POST",
        "deployments",
        {
            "spec": {
                "displayName": "Keyboard iris",
                "groupName": "default",
                "description": "made through the REST API",
                "predictors": [
                    {
                        "instanceType": "cpu-0.5",
                        "replicas": 1,
                        "modelURI": BUNDLE_DIR,
                        "metadata": {"stage": "test"},
                    }
                ],
            }
        },
    )
    deployment_id = created["id"]
    try:
        # A deployment made elsewhere shows up; search and "Deployed by me" filter it.
        sidebar = open_sidebar(page)
        cell = sidebar.locator(f'li[data-deployment-id="{deployment_id}"]')
        expect(cell).to_be_visible(timeout=SOON)
        search = sidebar.get_by_label("Search deployments by name")
        search.fill("no such model")
        expect(cell).to_have_count(0)
        expect(sidebar.get_by_text("No deployment matches.")).to_be_visible()
        search.fill("KEYBOARD")
        expect(cell).to_be_visible()
        sidebar.get_by_label("Deployed by me").check()
        expect(cell).to_be_visible()
        expect(cell).to_have_class(re.compile("jp-PrimeHub-phase-deployed"), timeout=ROLLOUT)

        # Keyboard: open from the list, move between tabs with the arrow keys.
        cell.get_by_role("button", name=re.compile("^Open Keyboard iris")).focus()
        page.keyboard.press("Enter")
        detail = page.locator(f"#primehub-deployment-{deployment_id}")
        expect(detail).to_be_visible()
        detail.get_by_role("tab", name="Information").focus()
        page.keyboard.press("ArrowRight")
        logs_tab = detail.get_by_role("tab", name="Logs")
        expect(logs_tab).to_be_focused()
        expect(logs_tab).to_have_attribute("aria-selected", "true")
        page.keyboard.press("End")
        expect(detail.get_by_role("tab", name="Jobs")).to_have_attribute("aria-selected", "true")
        expect(detail.get_by_role("tab")).to_have_count(5)  # public: no Clients tab

        # Restorable: once the workspace holds the open view, a reload brings it back.
        wait_for_workspace(lab, f"primehub-deployment:{deployment_id}")
        page.goto(f"{lab.url}lab?token={lab.token}")
        expect(page.locator(f"#primehub-deployment-{deployment_id}")).to_be_visible(timeout=SOON)
        expect(page.locator("#primehub-deployments")).to_be_visible()
        expect(cell).to_be_visible(timeout=SOON)

        # The command palette has our commands; one opens the create form, focused.
        page.keyboard.press("Control+Shift+C")
        palette = page.locator(".lm-CommandPalette-input")
        expect(palette).to_be_focused()
        palette.fill("Model Deployments: Create")
        expect(page.locator(".lm-CommandPalette-item.lm-mod-active")).to_contain_text(
            "Create a deployment"
        )
        page.keyboard.press("Enter")
        form = page.locator("form.jp-PrimeHub-form")
        expect(form).to_be_visible()
        expect(field(form, "Deployment name")).to_be_focused()

        # Dark theme: the same views, in the theme's colours.
        page.evaluate(
            "window.jupyterapp.commands.execute('apputils:change-theme', "
            "{theme: 'JupyterLab Dark'})"
        )
        expect(page.locator("body")).to_have_attribute("data-jp-theme-light", "false", timeout=SOON)
        expect(page.locator("#jupyterlab-splash")).to_have_count(0, timeout=SOON)
        page.screenshot(path=str(artifacts / "dark-create-form.png"))
        page.get_by_role("tab", name=re.compile("Keyboard iris")).click()
        detail.get_by_role("tab", name="Information").click()
        page.screenshot(path=str(artifacts / "dark-detail.png"))
        background = page.evaluate(
            "getComputedStyle(document.querySelector('.jp-PrimeHub-detail-panel')).backgroundColor"
        )
        assert background != "rgb(255, 255, 255)", background

        # A group whose deployment is disabled: PrimeHub's words, and no Deploy.
        lab.api("PATCH", "groups/default", {"enabledDeployment": False})
        page.get_by_role("tab", name="New deployment").click()
        form.get_by_role("button", name="Cancel").click()
        expect(form).to_have_count(0)
        sidebar.get_by_role("button", name="Create a deployment").first.click()
        expect(form.get_by_role("alert").filter(has_text=FEATURE_DISABLED)).to_be_visible(
            timeout=SOON
        )
        expect(form.get_by_role("button", name="Deploy")).to_be_disabled()
        assert console.errors == [], "\n".join(console.errors)
    finally:
        lab.api("PATCH", "groups/default", {"enabledDeployment": True})
        page.evaluate(
            "window.jupyterapp.commands.execute('apputils:change-theme', "
            "{theme: 'JupyterLab Light'})"
        )
        lab.api("DELETE", f"deployments/{deployment_id}")


def test_missing_server_extension_says_how_to_install_it(
    browser: Any, tmp_path_factory: pytest.TempPathFactory, console: ConsoleLog, artifacts: Path
) -> None:
    bare = start_lab(tmp_path_factory.mktemp("lab-without-server"), server_extension=False)
    try:
        # Every call of the missing API answers 404: that is the point of this test.
        console.allow_http(404, r"/primehub/api/")
        with open_page(browser, bare, console) as page:
            sidebar = open_sidebar(page)
            expect(sidebar).to_contain_text("pip install primehub-jupyter", timeout=SOON)
            expect(sidebar.get_by_role("button", name="Create a deployment")).to_be_disabled()
            expect(
                page.locator(".Toastify__toast").filter(has_text="pip install primehub-jupyter")
            ).to_be_visible(timeout=SOON)
            sidebar.screenshot(path=str(artifacts / "sidebar-server-missing.png"))
        assert console.errors == [], "\n".join(console.errors)
    finally:
        stop_lab(bare)
