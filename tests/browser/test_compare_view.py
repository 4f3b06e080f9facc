"""The sidebar's Compare tab: shown for several predictors, Promote after a dialog."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from .conftest import BUNDLE_DIR, ConsoleLog, Lab
from .test_sidebar import SOON, confirm_dialog, open_sidebar

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]


def test_compare_tab_and_promote(page: Page, lab: Lab, console: ConsoleLog) -> None:
    predictor = {"instanceType": "cpu-0.5", "modelURI": BUNDLE_DIR}
    # Stopped: the view needs the spec and the report, not running replicas.
    created = lab.api(
        "POST",
        "deployments",
        {
            "spec": {
                "displayName": "Iris canary",
                "groupName": "default",
                "stop": True,
                "predictors": [
                    {**predictor, "name": "v1", "traffic": 90},
                    {**predictor, "name": "v2", "traffic": 10},
                ],
            }
        },
    )
    try:
        sidebar = open_sidebar(page)
        cell = sidebar.locator(f'li[data-deployment-id="{created["id"]}"]')
        cell.get_by_role("button", name=re.compile("^Open Iris canary")).click()
        detail = page.locator(f"#primehub-deployment-{created['id']}")
        expect(detail).to_be_visible(timeout=SOON)
        expect(detail.get_by_role("tab")).to_have_text(
            ["Information", "Logs", "History", "Metrics", "Jobs", "Compare"], timeout=SOON
        )
        detail.get_by_role("tab", name="Compare").click()
        table = detail.get_by_role("table", name="Predictors compared")
        expect(table.locator("tbody tr")).to_have_count(2, timeout=SOON)
        expect(table.locator('tr[data-predictor="v1"]')).to_contain_text("primary")
        expect(table.locator('tr[data-predictor="v2"]')).to_contain_text("not enough data")
        detail.get_by_role("button", name="Promote v2").click()
        body = confirm_dialog(page, "Promote v2?", "Promote")
        assert "remove v1" in body
        # One predictor left: nothing to compare, so the tab goes.
        expect(detail.get_by_role("tab")).to_have_text(
            ["Information", "Logs", "History", "Metrics", "Jobs"], timeout=SOON
        )
        spec = lab.api("GET", f"deployments/{created['id']}")["spec"]
        assert [p["name"] for p in spec["predictors"]] == ["v2"]
        assert (
            lab.api("GET", f"deployments/{created['id']}/history")["history"][0]["updateMessage"]
            == "promote v2"
        )
    finally:  # the Lab is shared: later tests expect only their own deployments
        lab.api("DELETE", f"deployments/{created['id']}")
