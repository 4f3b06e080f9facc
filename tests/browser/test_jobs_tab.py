"""The detail view's Jobs tab (a job from a form to its output) and the access policy fields."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from .conftest import BUNDLE_DIR, ConsoleLog, Lab
from .test_sidebar import SOON, confirm_dialog, field, open_sidebar

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

#: Bounds a job of a few rows (a sandboxed process loading the model); it measures nothing.
JOB_DONE = 120_000
ROWS = 30


def open_detail(page: Page, deployment_id: str, name: str) -> Any:
    sidebar = open_sidebar(page)
    cell = sidebar.locator(f'li[data-deployment-id="{deployment_id}"]')
    cell.get_by_role("button", name=re.compile(f"^Open {re.escape(name)}")).click()
    detail = page.locator(f"#primehub-deployment-{deployment_id}")
    expect(detail).to_be_visible(timeout=SOON)
    return detail


def test_jobs_tab_scores_a_file_and_opens_its_output(
    page: Page, lab: Lab, console: ConsoleLog, artifacts: Path
) -> None:
    # Four unnamed features per row, as the iris bundle takes them.
    rows = ["sepal_length,sepal_width,petal_length,petal_width"]
    rows += [f"{5 + i % 3}.1,3.5,{1 + i % 5}.4,0.{i % 9}" for i in range(ROWS)]
    (lab.root_dir / "jobs-in.csv").write_text("\n".join(rows) + "\n")
    # Stopped: a job scores with the bundle in its own process, no replica needed.
    created = lab.api(
        "POST",
        "deployments",
        {
            "spec": {
                "displayName": "Iris jobs",
                "groupName": "default",
                "stop": True,
                "predictors": [{"instanceType": "cpu-0.5", "modelURI": BUNDLE_DIR}],
            }
        },
    )
    deployment_id = created["id"]
    try:
        detail = open_detail(page, deployment_id, "Iris jobs")
        detail.get_by_role("tab", name="Jobs").click()
        expect(detail.get_by_text("No jobs yet")).to_be_visible(timeout=SOON)
        detail.get_by_role("button", name="New job").click()
        form = detail.get_by_role("form", name="New job")
        expect(form).to_be_visible()

        # A format the server cannot tell: its 422 lands on the format field, the typed
        # paths stay.
        console.allow_http(422, rf"/primehub/api/deployments/{deployment_id}/jobs")
        field(form, "Input file").fill("jobs-in.xlsx")
        field(form, "Output file").fill("jobs-out.csv")
        form.get_by_role("button", name="Start job").click()
        invalid = form.locator(".jp-PrimeHub-field.jp-mod-invalid")
        expect(invalid).to_have_count(1, timeout=SOON)
        expect(invalid).to_contain_text("Input format")
        expect(invalid).to_contain_text("unknown format")
        expect(field(form, "Input file")).to_have_value("jobs-in.xlsx")
        expect(field(form, "Output file")).to_have_value("jobs-out.csv")

        # A file that is not there: refused at submission, the message under the input.
        field(form, "Input file").fill("no-such-file.csv")
        expect(invalid).to_have_count(0)
        form.get_by_role("button", name="Start job").click()
        expect(invalid).to_have_count(1, timeout=SOON)
        expect(invalid).to_contain_text("Input file")
        expect(field(form, "Input file")).to_have_value("no-such-file.csv")
        assert lab.api("GET", f"deployments/{deployment_id}/jobs")["jobs"] == []

        # The real file: the job appears, runs, and succeeds with every row scored.
        field(form, "Input file").fill("jobs-in.csv")
        form.get_by_role("button", name="Start job").click()
        expect(form.get_by_role("status")).to_contain_text(
            re.compile(r"Started j[0-9a-f]{10}"), timeout=SOON
        )
        expect(invalid).to_have_count(0)
        table = detail.get_by_role("table", name="Jobs")
        row = table.locator("tbody tr[data-job-id]")
        expect(row).to_have_count(1, timeout=SOON)
        job_id = row.get_attribute("data-job-id")
        assert job_id and re.fullmatch(r"j[0-9a-f]{10}", job_id)
        expect(row).to_have_attribute("data-phase", "Succeeded", timeout=JOB_DONE)
        expect(row.locator(".jp-PrimeHub-badge")).to_have_text("Succeeded")
        expect(row.locator(".jp-PrimeHub-job-rows")).to_have_text(f"{ROWS} / {ROWS} / 0")
        expect(row.locator("progress")).to_have_attribute("value", "100")
        expect(row.get_by_role("button", name=f"Cancel {job_id}")).to_have_count(0)
        # Its log: the runner's lines, under the row.
        row.get_by_role("button", name=f"Log of {job_id}").click()
        expect(detail.get_by_label(f"Log lines of {job_id}")).not_to_have_text(
            re.compile(r"^(No log lines yet\.)?$"), timeout=SOON
        )
        job = lab.api("GET", f"deployments/{deployment_id}/jobs/{job_id}")
        assert job["phase"] == "Succeeded" and job["rowsScored"] == ROWS
        assert job["spec"]["output"] == str(lab.root_dir / "jobs-out.csv")

        detail.screenshot(path=str(artifacts / "detail-jobs.png"))
        # Open output: the CSV opens in JupyterLab's own viewer, in the main area.
        row.get_by_role("button", name=f"Open the output of {job_id}").click()
        tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="jobs-out.csv")
        expect(tab).to_be_visible(timeout=SOON)
        # The CSV viewer's first render keeps the page busy a while on a loaded machine.
        page.wait_for_function("document.readyState === 'complete'", timeout=JOB_DONE)
        expect(page.locator(".jp-CSVViewer")).to_be_visible(timeout=SOON)
        scored = (lab.root_dir / "jobs-out.csv").read_text().splitlines()
        assert len(scored) == ROWS + 1 and "request_id" in scored[0]

        # Remove the finished job: asked first, then gone from the list and the API.
        # Back to the deployment (its view keeps the Jobs tab).
        page.locator(f'#primehub-deployments li[data-deployment-id="{deployment_id}"]').get_by_role(
            "button", name=re.compile("^Open Iris jobs")
        ).click()
        expect(detail).to_be_visible()
        expect(detail.get_by_role("tab", name="Jobs")).to_have_attribute("aria-selected", "true")
        row.get_by_role("button", name=f"Remove {job_id}").click()
        confirm_dialog(page, f"Remove job {job_id}?", "Remove")
        expect(row).to_have_count(0, timeout=SOON)
        assert lab.api("GET", f"deployments/{deployment_id}/jobs")["jobs"] == []
        assert not console.errors, console.errors
    finally:  # the Lab is shared: later tests expect only their own deployments
        lab.api("DELETE", f"deployments/{deployment_id}")


def test_policy_fields_of_a_private_endpoint(
    page: Page, lab: Lab, console: ConsoleLog, artifacts: Path
) -> None:
    sidebar = open_sidebar(page)
    sidebar.get_by_role("button", name="Create a deployment").first.click()
    form = page.locator("form.jp-PrimeHub-form")
    expect(form).to_be_visible()
    field(form, "Deployment name").fill("Iris policy")
    deployment_id = field(form, "Deployment ID").input_value()
    field(form, "Model URI").fill(BUNDLE_DIR)
    # Public: no policy fields; private: the user's groups to tick, groups and users typed.
    expect(form.get_by_label("Allowed users")).to_have_count(0)
    form.get_by_label("Private access").check()
    groups = form.get_by_role("group", name="Allowed groups of yours")
    expect(groups.get_by_label("default", exact=True)).to_be_visible(timeout=SOON)
    groups.get_by_label("default", exact=True).check()
    expect(field(form, "Allowed groups")).to_have_value("default")

    # A group name the API refuses: its 422 lands under the groups, nothing typed is lost.
    field(form, "Allowed groups").fill("default, Not_A_Group!")
    field(form, "Allowed users").fill("bob, carol@example.com")
    console.allow_http(422, r"/primehub/api/deployments\?")
    form.get_by_role("button", name="Deploy").click()
    invalid = form.locator(".jp-PrimeHub-field.jp-mod-invalid")
    expect(invalid).to_have_count(1, timeout=SOON)
    expect(invalid).to_contain_text("Allowed groups")
    expect(field(form, "Allowed users")).to_have_value("bob, carol@example.com")
    assert all(d["id"] != deployment_id for d in lab.api("GET", "deployments")["deployments"])

    form.screenshot(path=str(artifacts / "create-form-policy.png"))
    field(form, "Allowed groups").fill("default")
    form.get_by_role("button", name="Deploy").click()
    try:
        detail = page.locator(f"#primehub-deployment-{deployment_id}")
        expect(detail).to_be_visible(timeout=SOON)
        spec = lab.api("GET", f"deployments/{deployment_id}")["spec"]
        assert spec["endpoint"]["accessType"] == "private"
        assert spec["endpoint"]["policy"] == {
            "users": ["bob", "carol@example.com"],
            "groups": ["default"],
        }
        info = detail.locator(".jp-PrimeHub-props")
        policy = info.locator("tr").filter(has_text="Access policy")
        expect(policy).to_contain_text("Users: bob, carol@example.com; Groups: default")
        # Run an Example: the Basic form as before, and the bearer form beside it.
        expect(detail.get_by_label("example curl command", exact=True)).to_contain_text(
            "-u '<client-name>:<client-token>'"
        )
        expect(
            detail.get_by_label("example curl command with a bearer token", exact=True)
        ).to_contain_text('-H "Authorization: Bearer <access-token>"')

        # The update form shows the policy; emptying both lists removes it.
        detail.get_by_role("button", name="Update", exact=True).click()
        update = page.locator("form.jp-PrimeHub-form")
        expect(field(update, "Allowed groups")).to_have_value("default")
        expect(field(update, "Allowed users")).to_have_value("bob, carol@example.com")
        field(update, "Allowed groups").fill("")
        field(update, "Allowed users").fill("")
        update.get_by_role("button", name="Update", exact=True).click()
        confirm_dialog(page, "Update Iris policy?", "Update")
        detail.get_by_role("tab", name="Information").click()
        expect(detail.locator(".jp-PrimeHub-props")).to_contain_text(
            "Members of the group default (no policy)", timeout=SOON
        )
        assert lab.api("GET", f"deployments/{deployment_id}")["spec"]["endpoint"].get("policy") in (
            None,
            {"users": [], "groups": []},
        )
        assert not console.errors, console.errors
    finally:
        lab.api("DELETE", f"deployments/{deployment_id}")
