"""The Service catalog page: Swagger UI on each deployment's document, try-it-out included."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Page, expect

from .conftest import BUNDLE_DIR, ConsoleLog, Lab

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

ROLLOUT = 120_000
SOON = 30_000
PREDICT = "/api/v1.0/predictions"


def _create(lab: Lab, name: str, access: str) -> str:
    body = {
        "spec": {
            "displayName": name,
            "groupName": "default",
            "endpoint": {"accessType": access},
            "predictors": [{"instanceType": "cpu-0.5", "replicas": 1, "modelURI": BUNDLE_DIR}],
        }
    }
    return str(lab.api("POST", "deployments", body)["id"])


@pytest.fixture
def deployments(lab: Lab) -> Iterator[dict[str, str]]:
    """A public and a private iris deployment, deleted afterwards."""
    made = {
        "public": _create(lab, "Catalog public iris", "public"),
        "private": _create(lab, "Catalog private iris", "private"),
    }
    yield made
    for deployment_id in made.values():
        requests.delete(
            f"{lab.url}primehub/api/deployments/{deployment_id}",
            headers={"Authorization": f"token {lab.token}"},
            timeout=30,
        )


def _wait_for_saved_catalog(lab: Lab, deployment_id: str, limit: float = 30) -> None:
    """Poll JupyterLab's workspace until it records the catalog page at `deployment_id`."""
    url = f"{lab.url}lab/api/workspaces/default"
    deadline = time.monotonic() + limit
    while True:
        saved = requests.get(url, params={"token": lab.token}, timeout=30).json()
        entry = saved.get("data", {}).get("primehub-catalog:catalog", {})
        if entry.get("data", {}).get("id") == deployment_id:
            return
        assert time.monotonic() < deadline, f"the workspace does not hold the catalog: {saved}"
        time.sleep(0.2)


def _try_predictions(page: Page, catalog: object) -> None:
    """Expand the Seldon predictions operation, press Try it out and Execute; expect a 200."""
    operation = page.locator(".swagger-ui .opblock").filter(
        has=page.locator(f'.opblock-summary-path[data-path="{PREDICT}"]')
    )
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.get_by_role("button", name="Execute").click()
    live = operation.locator(".live-responses-table")
    expect(live.locator("tbody .response-col_status").first).to_have_text("200", timeout=SOON)
    # The model's answer for the bundle's sample row: three class probabilities.
    expect(live.locator("tbody .response-col_description").first).to_contain_text('"ndarray"')


def test_catalog_renders_and_try_it_out_returns_the_prediction(
    page: Page, lab: Lab, console: ConsoleLog, artifacts: Path, deployments: dict[str, str]
) -> None:
    public, private = deployments["public"], deployments["private"]
    page.click('li[data-id="primehub-deployments"]')
    sidebar = page.locator("#primehub-deployments")
    for deployment_id in (public, private):
        cell = sidebar.locator(f'li[data-deployment-id="{deployment_id}"]')
        expect(cell).to_have_class(re.compile("jp-PrimeHub-phase-deployed"), timeout=ROLLOUT)

    # From the sidebar: the page lists the deployments the user may see.
    sidebar.get_by_role("button", name="Open the service catalog").click()
    catalog = page.locator("#primehub-catalog")
    expect(catalog).to_be_visible()
    item = catalog.locator(f'.jp-PrimeHub-catalog-item[data-deployment-id="{public}"]')
    expect(item).to_be_visible()
    expect(
        catalog.locator(f'.jp-PrimeHub-catalog-item[data-deployment-id="{private}"]')
    ).to_be_visible()
    item.click()
    # Swagger UI is loaded the first time a document is shown: give it time on a busy machine.
    title = catalog.locator(".swagger-ui .info .title")
    expect(title).to_contain_text(f"Deployment {public}", timeout=SOON)
    _try_predictions(page, catalog)
    catalog.screenshot(path=str(artifacts / "catalog-public.png"))

    # Live, with the sidebar closed: a deployment created or deleted elsewhere shows up and
    # goes without Refresh (the extension's list model, its change stream and its polling).
    page.click('li[data-id="primehub-deployments"]')
    expect(sidebar).to_be_hidden()
    extra = _create(lab, "Catalog extra iris", "public")
    extra_item = catalog.locator(f'.jp-PrimeHub-catalog-item[data-deployment-id="{extra}"]')
    expect(extra_item).to_be_visible(timeout=SOON)
    lab.api("DELETE", f"deployments/{extra}")
    expect(extra_item).to_have_count(0, timeout=SOON)
    page.click('li[data-id="primehub-deployments"]')
    expect(sidebar).to_be_visible()

    # From a deployment's detail view: the same page, at that deployment; private endpoints
    # take a client's name and token through Swagger UI's Authorize (HTTP Basic).
    client = lab.api("POST", f"deployments/{private}/clients", {"name": "swagger"})
    sidebar.locator(f'li[data-deployment-id="{private}"] .jp-PrimeHub-cell-title').click()
    detail = page.locator(".jp-PrimeHub-detail").filter(has_text=private)
    detail.get_by_role("button", name="Service catalog").click()
    expect(catalog).to_be_visible()
    expect(title).to_contain_text(f"Deployment {private}", timeout=SOON)
    catalog.locator(".swagger-ui .btn.authorize").click()
    dialog = page.locator(".swagger-ui .dialog-ux")
    dialog.locator('input[type="text"]').fill("swagger")
    dialog.locator('input[type="password"]').fill(client["token"])
    dialog.locator("button.modal-btn.authorize").click()
    expect(dialog).to_contain_text("Authorized")
    dialog.locator("button.btn-done").click()
    _try_predictions(page, catalog)
    catalog.screenshot(path=str(artifacts / "catalog-private.png"))

    # A reload restores the page, at the deployment it showed (the layout restorer), once
    # the workspace holds it.
    _wait_for_saved_catalog(lab, private)
    page.goto(f"{lab.url}lab?token={lab.token}")
    expect(catalog).to_be_visible(timeout=SOON)
    expect(title).to_contain_text(f"Deployment {private}", timeout=SOON)
    expect(
        catalog.locator(f'.jp-PrimeHub-catalog-item[data-deployment-id="{private}"]')
    ).to_have_attribute("aria-current", "true")
    assert console.errors == []
