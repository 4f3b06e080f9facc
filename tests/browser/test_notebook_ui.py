"""A notebook in a real JupyterLab runs %deploy and the DeploymentPanel: the card and the green
cell render (headless Debian chromium, Playwright)."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import nbformat
import pytest
from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from .conftest import ConsoleLog, Lab

pytestmark = pytest.mark.browser

GREEN = "rgb(46, 125, 50)"  # Deployed

#: The buttons and descriptions of a widget tree that do not show their whole text.
TRUNCATED = """
(root) => [...root.querySelectorAll('button.jupyter-button, .widget-label, .widget-button')]
  .filter(el => el.offsetParent !== null && el.scrollWidth > el.clientWidth + 1)
  .map(el => el.textContent.trim() || el.title)
"""


def write_notebook(path: Path) -> None:
    cells = [
        "%load_ext primehub_jupyter\n"
        "from sklearn.datasets import load_iris\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "X, y = load_iris(return_X_y=True)\n"
        "model = LogisticRegression(max_iter=1000).fit(X, y)",
        "d = %deploy model --name iris-notebook-ui",
        "d",
        "from primehub_jupyter import DeploymentPanel\n"
        "panel = DeploymentPanel(refresh_seconds=0)\n"
        "panel",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)


def test_deploy_magic_and_panel_render_in_jupyterlab(
    page: Page, lab: Lab, console: ConsoleLog, artifacts: Path
) -> None:
    write_notebook(lab.root_dir / "deploy-ui.ipynb")
    page.goto(lab.lab_url("lab/tree/deploy-ui.ipynb"))
    notebook = page.locator(".jp-NotebookPanel").first
    expect(notebook).to_be_visible(timeout=60_000)
    # A new notebook may ask which kernel to start: the default (Python 3) is what we want.
    select = page.get_by_role("button", name="Select", exact=True)
    with contextlib.suppress(PlaywrightTimeout):
        select.click(timeout=10_000)
    expect(page.get_by_text("Python 3 (ipykernel) | Idle")).to_be_visible(timeout=60_000)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

    # The card: the deployment's name, a green "Deployed" badge, the endpoint and a curl example.
    card = notebook.locator(".ph-card").first
    expect(card).to_be_visible(timeout=180_000)
    expect(card.locator("[data-phase='Deployed']")).to_have_text("Deployed")
    expect(card).to_contain_text("iris-notebook-ui")
    expect(card).to_contain_text("/deployment/iris-notebook-ui-")
    expect(card.locator("pre.ph-curl")).to_contain_text("curl -X POST")
    border = card.evaluate("el => getComputedStyle(el).borderLeftColor")
    assert border == GREEN, border
    # Times as in the sidebar: local with the zone, the ISO UTC time in the tooltip.
    expect(card.locator(".ph-time")).to_have_attribute("title", re.compile(r"T\d\d:\d\d:\d\dZ$"))

    # The panel: the deployment's cell in the list, coloured green.
    row = notebook.locator(".widget-hbox", has_text="iris-notebook-ui").first
    expect(row).to_be_visible(timeout=60_000)
    expect(row.locator("[data-phase='Deployed']")).to_be_visible()
    assert row.evaluate("el => getComputedStyle(el).borderLeftColor") == GREEN
    row.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "notebook-deploy-card-and-panel.png"), full_page=True)
    # No label cut short ("Create deplo...", "View revis..."), in the list or the detail.
    panel = notebook.locator(".jp-OutputArea-output").filter(has_text="Model Deployments").last
    assert panel.evaluate(TRUNCATED) == []

    # Opening it from the panel shows the detail tabs.
    row.get_by_role("button", name="Open").click()
    expect(notebook.locator(".widget-tab").first).to_contain_text("Information", timeout=30_000)
    page.screenshot(path=str(artifacts / "notebook-panel-detail.png"), full_page=True)
    assert panel.evaluate(TRUNCATED) == []
    notebook.get_by_role("tab", name="History").click()
    expect(notebook.get_by_text("View revision")).to_be_visible(timeout=30_000)
    expect(panel.locator(".ph-history")).to_contain_text("Deployment Stopped")
    panel.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "notebook-panel-history.png"), full_page=True)
    assert panel.evaluate(TRUNCATED) == []

    deployment_id = next(
        d["id"] for d in lab.api("GET", "deployments")["deployments"]
        if d["spec"]["displayName"] == "iris-notebook-ui"
    )  # fmt: skip
    lab.api("DELETE", f"deployments/{deployment_id}")
    assert console.errors == [], console.errors
