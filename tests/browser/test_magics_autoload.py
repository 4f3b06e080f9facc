"""The magics are there in a new notebook's Python kernel without `%load_ext`, and again after a
kernel restart (the labextension loads them silently; headless Debian chromium, Playwright)."""

from __future__ import annotations

import contextlib

import nbformat
import pytest
from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from .conftest import ConsoleLog, Lab

pytestmark = pytest.mark.browser

HELP_LINE = "one deployment (a card)"  # a line of `%phdeploy help`


def _run_first_cell(page: Page) -> None:
    cell = page.locator(".jp-Notebook .jp-Cell").first
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Control+Enter")


def test_magics_load_in_every_python_kernel_without_load_ext(
    page: Page, lab: Lab, console: ConsoleLog
) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("%phdeploy help")])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, lab.root_dir / "autoload.ipynb")
    page.goto(lab.lab_url("lab/tree/autoload.ipynb"))
    notebook = page.locator(".jp-NotebookPanel").first
    expect(notebook).to_be_visible(timeout=60_000)
    with contextlib.suppress(PlaywrightTimeout):
        page.get_by_role("button", name="Select", exact=True).click(timeout=10_000)
    expect(page.get_by_text("Python 3 (ipykernel) | Idle")).to_be_visible(timeout=60_000)
    output = notebook.locator(".jp-OutputArea-output").first

    def ran_help() -> None:
        # The kernel may become idle a moment before the silent load is done: run until the
        # magic is found, with a deadline (Playwright's expect waits on the condition).
        for _attempt in range(20):
            _run_first_cell(page)
            with contextlib.suppress(AssertionError):
                expect(output).to_contain_text(HELP_LINE, timeout=3_000)
                return
        expect(output).to_contain_text(HELP_LINE, timeout=1_000)

    ran_help()
    assert "UsageError" not in output.inner_text()

    # After a restart the kernel is a new process: the magics come back on their own.
    page.get_by_role("menuitem", name="Kernel", exact=True).click()
    page.get_by_role("menuitem", name="Restart Kernel and Clear Outputs of All Cells…").click()
    page.locator(".jp-Dialog .jp-mod-accept").click()  # "Restart"
    expect(notebook.locator(".jp-OutputArea-output")).to_have_count(0, timeout=30_000)
    expect(page.get_by_text("Python 3 (ipykernel) | Idle")).to_be_visible(timeout=60_000)
    ran_help()
