"""Live updates in the sidebar (the change stream) and its Vega metrics charts, in chromium."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Page, expect

from .conftest import BUNDLE_DIR, ConsoleLog, Lab

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

ROLLOUT = 120_000
#: How soon a change made elsewhere must show in the open sidebar. With the stream live the
#: list polls only once a minute, so only the pushed event can bring it this fast.
PUSHED = 10_000


def create(lab: Lab, name: str) -> str:
    body = {
        "spec": {
            "displayName": name,
            "groupName": "default",
            "predictors": [{"instanceType": "cpu-0.5", "replicas": 1, "modelURI": BUNDLE_DIR}],
        }
    }
    return str(lab.api("POST", "deployments", body)["id"])


def open_sidebar(page: Page) -> Any:
    page.click('li[data-id="primehub-deployments"]')
    sidebar = page.locator("#primehub-deployments")
    expect(sidebar).to_be_visible()
    return sidebar


def test_a_deployment_created_elsewhere_appears_in_the_open_sidebar_at_once(
    page: Page, lab: Lab, console: ConsoleLog, artifacts: Path
) -> None:
    sidebar = open_sidebar(page)
    # The sidebar is subscribed to the change stream (and so polls only as a safety net).
    expect(sidebar.locator('.jp-PrimeHub-live[data-live="true"]')).to_be_attached(timeout=30_000)
    deployment_id = create(lab, "Pushed iris")
    try:
        cell = sidebar.locator(f'li[data-deployment-id="{deployment_id}"]')
        expect(cell).to_be_visible(timeout=PUSHED)
        # Its phase follows without a reload too.
        expect(cell).to_have_class(re.compile("jp-PrimeHub-phase-deployed"), timeout=ROLLOUT)
        # ...and so does its deletion from elsewhere.
        lab.api("DELETE", f"deployments/{deployment_id}")
        expect(cell).to_have_count(0, timeout=PUSHED)
        sidebar.screenshot(path=str(artifacts / "sidebar-live.png"))
    finally:
        requests.delete(
            f"{lab.url}primehub/api/deployments/{deployment_id}",
            headers={"Authorization": f"token {lab.token}"},
            timeout=30,
        )
    assert console.errors == [], console.errors


def test_the_metrics_tab_draws_vega_charts_for_a_deployment_with_traffic(
    page: Page, lab: Lab, console: ConsoleLog, artifacts: Path
) -> None:
    deployment_id = create(lab, "Charted iris")
    try:
        sidebar = open_sidebar(page)
        cell = sidebar.locator(f'li[data-deployment-id="{deployment_id}"]')
        expect(cell).to_have_class(re.compile("jp-PrimeHub-phase-deployed"), timeout=ROLLOUT)
        endpoint = lab.api("GET", f"deployments/{deployment_id}")["status"]["endpoint"]
        body = {"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2]]}}
        for _ in range(20):
            assert requests.post(endpoint, json=body, timeout=30).status_code == 200
        requests.post(endpoint, data=b"not json", timeout=30)  # one 4xx
        cell.locator(".jp-PrimeHub-cell-title").click()
        detail = page.locator(".jp-PrimeHub-detail").filter(has_text="Charted iris").first
        detail.get_by_role("tab", name="Metrics").click()
        charts = detail.locator(".jp-PrimeHub-chart")
        expect(charts).to_have_count(6, timeout=30_000)
        # Each is drawn by vega-embed: an svg inside a .vega-embed element.
        expect(detail.locator(".vega-embed svg")).to_have_count(6, timeout=30_000)
        expect(detail.locator('[data-chart="latency"] .vega-embed svg')).to_contain_text(
            "Latency (log scale)"
        )
        # The traffic is there: the summary counts it (the charts draw the same document).
        expect(detail.locator(".jp-PrimeHub-totals")).to_contain_text(
            re.compile(r"last 900 s: (2[1-9]|[3-9]\d|\d{3,}) requests"),
            timeout=30_000,
        )
        # Legends sit outside the plot (under it) and series take the theme's colours.
        requests_chart = detail.locator('[data-chart="requests"] .vega-embed svg')
        expect(requests_chart).to_contain_text("2xx")
        page.screenshot(path=str(artifacts / "detail-metrics-vega.png"))
        # Every chart ends up drawn at a finite size.
        boxes = page.evaluate(
            "[...document.querySelectorAll('.jp-PrimeHub-chart .vega-embed svg')]"
            ".map(s => s.getAttribute('viewBox'))"
        )
        assert len(boxes) == 6 and all(re.fullmatch(r"0 0 \d+ \d+", b) for b in boxes), boxes
    finally:
        requests.delete(
            f"{lab.url}primehub/api/deployments/{deployment_id}",
            headers={"Authorization": f"token {lab.token}"},
            timeout=30,
        )
    assert console.errors == [], console.errors
