"""First-use polish of the sidebar (issue 13), checked in Debian's chromium as a new user saw it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from .conftest import BUNDLE_DIR, ConsoleLog, Lab
from .test_sidebar import ROLLOUT, SOON, field, open_sidebar

pytestmark = [pytest.mark.browser, pytest.mark.timeout(400)]

#: WCAG 2.x contrast of every cell of the changed rows in `selector`, from the rendered styles:
#: the text colour (composited over its background) against the effective background (each
#: ancestor's background composited until an opaque one, the page white below all).
CONTRASTS = """
(selector) => {
  const parse = (text) => {
    let m = text.match(/^rgba?\\(([^)]+)\\)$/);
    if (m) {
      const p = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
      return [p[0] / 255, p[1] / 255, p[2] / 255, p.length > 3 ? p[3] : 1];
    }
    m = text.match(/^color\\(srgb ([^)]+)\\)$/);
    if (m) {
      const p = m[1].split(/[ /]+/).filter(Boolean).map(Number);
      return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
    }
    throw new Error('unknown colour ' + text);
  };
  const over = (top, below) => {
    const a = top[3];
    return [0, 1, 2].map(i => top[i] * a + below[i] * (1 - a)).concat([1]);
  };
  const background = (el) => {
    const layers = [];
    for (let node = el; node; node = node.parentElement) {
      const c = parse(getComputedStyle(node).backgroundColor);
      if (c[3] > 0) layers.push(c);
      if (c[3] >= 1) break;
    }
    let out = [1, 1, 1, 1];
    for (const layer of layers.reverse()) out = over(layer, out);
    return out;
  };
  const lum = (c) => {
    const f = (v) => (v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4));
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
  };
  const cells = [...document.querySelectorAll(selector)];
  return cells.map(cell => {
    const bg = background(cell);
    const fg = over(parse(getComputedStyle(cell).color), bg);
    const [hi, lo] = [lum(fg), lum(bg)].sort((x, y) => y - x);
    return {
      text: cell.textContent,
      ratio: (hi + 0.05) / (lo + 0.05),
      tinted: getComputedStyle(cell).backgroundColor
    };
  });
}
"""

CHANGED_CELLS = (
    ".jp-PrimeHub-diff-changed td, .jp-PrimeHub-diff-changed th, "
    "td.jp-PrimeHub-diff-after, td.jp-PrimeHub-diff-before"
)


def assert_readable(page: Page, scope: str, where: str) -> list[dict[str, Any]]:
    """Every changed cell under `scope` reaches WCAG AA (4.5:1); returns what was measured."""
    measured = page.evaluate(CONTRASTS, f"{scope} :is({CHANGED_CELLS})")
    assert measured, f"no changed cells in {where}"
    low = [m for m in measured if m["ratio"] < 4.5]
    assert not low, f"{where}: contrast below 4.5:1: {low}"
    return measured


def set_theme(page: Page, theme: str) -> None:
    page.evaluate(
        f"window.jupyterapp.commands.execute('apputils:change-theme', {{theme: '{theme}'}})"
    )
    light = "true" if theme == "JupyterLab Light" else "false"
    expect(page.locator("body")).to_have_attribute("data-jp-theme-light", light, timeout=SOON)
    expect(page.locator("#jupyterlab-splash")).to_have_count(0, timeout=SOON)


def test_words_previews_contrast_in_both_themes_and_endpoint(
    page: Page, lab: Lab, console: ConsoleLog, artifacts: Path
) -> None:
    deployment_id = "polish-iris-ab12c"  # as long as a generated one
    lab.api(
        "POST",
        "deployments",
        {
            "id": deployment_id,
            "spec": {
                "displayName": "Polish iris",
                "groupName": "default",
                "updateMessage": "first version",
                "predictors": [{"instanceType": "cpu-0.5", "replicas": 1, "modelURI": BUNDLE_DIR}],
            },
        },
    )
    try:
        lab.api(
            "PATCH",
            f"deployments/{deployment_id}",
            {"spec": {"predictors": [{"replicas": 2}], "updateMessage": "scale out"}},
        )
        sidebar = open_sidebar(page)
        cell = sidebar.locator(f'li[data-deployment-id="{deployment_id}"]')
        expect(cell).to_have_class(re.compile("jp-PrimeHub-phase-deployed"), timeout=ROLLOUT)

        # The endpoint: the head gives way, the id and the path's end stay in the cell.
        endpoint = lab.api("GET", f"deployments/{deployment_id}")["status"]["endpoint"]
        button = cell.locator("button.jp-PrimeHub-cell-endpoint")
        expect(button).to_have_attribute("title", re.compile(re.escape(endpoint)))
        the_id = button.locator(".jp-PrimeHub-endpoint-id")
        expect(the_id).to_have_text(deployment_id)
        rest = button.locator(".jp-PrimeHub-endpoint-rest")
        box = button.bounding_box()
        assert box
        for part in (the_id, rest):
            inner = part.bounding_box()
            assert inner and box["x"] - 1 <= inner["x"], (part, inner, box)
            assert inner["x"] + inner["width"] <= box["x"] + box["width"] + 1, (part, inner, box)
        head_cut = button.locator(".jp-PrimeHub-endpoint-head").evaluate(
            "el => el.scrollWidth > el.clientWidth"
        )
        assert head_cut, "a narrow sidebar elides the URL's head, not the id"
        # The path's end stays readable: the rest is cut at its start, if at all.
        shown_end = rest.evaluate(
            "el => { const r = document.createRange(); r.selectNodeContents(el);"
            " const box = el.getBoundingClientRect(), text = r.getBoundingClientRect();"
            " return text.right <= box.right + 1; }"
        )
        assert shown_end, "the end of the path (predictions) is visible"
        # Times: local with the zone's name, the ISO UTC time in the tooltip.
        updated = cell.locator(".jp-PrimeHub-cell-updated")
        expect(updated).to_have_attribute("title", re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"))
        sidebar.screenshot(path=str(artifacts / "polish-sidebar-endpoint.png"))

        cell.get_by_role("button", name=re.compile("^Open Polish iris")).click()
        detail = page.locator(f"#primehub-deployment-{deployment_id}")
        detail.get_by_role("tab", name="History").click()
        history = detail.get_by_role("table", name="History").locator("tbody tr")
        expect(history).to_have_count(2, timeout=SOON)
        expect(history.first.locator("td").nth(1)).to_have_attribute("title", re.compile(r"Z$"))

        for theme in ("JupyterLab Light", "JupyterLab Dark"):
            set_theme(page, theme)
            name = "dark" if "Dark" in theme else "light"
            # History > View: the spec in PrimeHub's words.
            history.last.get_by_role("button", name=re.compile("^View")).click()
            spec = detail.get_by_role("table", name="Spec of revision 1")
            for label in ("Deployment Name", "Model URI", "Replicas", "Instance Type",
                          "Access Type", "Deployment Stopped"):  # fmt: skip
                expect(spec.get_by_role("rowheader", name=label, exact=True)).to_be_visible()
            expect(spec).not_to_contain_text("predictors.0")
            expect(spec.locator('tr[data-field="stop"] td')).to_have_text("No")
            # History > Compare: the changed cells are readable.
            history.last.get_by_role("button", name=re.compile("^Compare")).click()
            diff = detail.get_by_role("table", name=re.compile("Differences between revision 1"))
            expect(diff.locator('tr[data-field="predictors.0.replicas"] th')).to_have_text(
                "Replicas"
            )
            compare = assert_readable(page, f"#primehub-deployment-{deployment_id}", "Compare")
            page.screenshot(path=str(artifacts / f"polish-{name}-compare.png"))

            # Roll back: the preview of what changes, readable, before anything happens.
            history.last.get_by_role("button", name="Roll back to revision 1").click()
            dialog = page.locator(".jp-Dialog")
            preview = dialog.get_by_role("table", name="Changes of the roll back to revision 1")
            row = preview.locator('tr[data-field="predictors.0.replicas"]')
            expect(row).to_contain_text("Replicas")
            expect(row.locator("td")).to_have_text(["2", "1"])
            expect(preview).not_to_contain_text("Deployment Stopped")  # stop stays as it is
            rollback = assert_readable(page, ".jp-Dialog", "the Roll back preview")
            page.screenshot(path=str(artifacts / f"polish-{name}-rollback-preview.png"))
            dialog.get_by_role("button", name="Cancel").click()
            expect(dialog).to_have_count(0)

            # Update: the confirmation lists the changes in words, readable.
            detail.get_by_role("button", name="Update", exact=True).click()
            form = page.locator("form.jp-PrimeHub-form")
            expect(form.locator(".jp-PrimeHub-locked-note")).to_contain_text("fixed")
            locked = field(form, "Deployment name")
            expect(locked).to_be_disabled()
            look = locked.evaluate(
                "el => [getComputedStyle(el).borderTopStyle, getComputedStyle(el).cursor]"
            )
            assert look == ["dashed", "not-allowed"], look  # locked looks locked
            field(form, "Replicas").fill("3")
            form.get_by_role("button", name="Update", exact=True).click()
            changes = dialog.get_by_role("table", name="Changes of the update")
            expect(changes.locator('tr[data-field="predictors.0.replicas"] td')).to_have_text(
                ["2", "3"]
            )
            update = assert_readable(page, ".jp-Dialog", "the Update dialog")
            page.screenshot(path=str(artifacts / f"polish-{name}-update-dialog.png"))
            dialog.get_by_role("button", name="Cancel").click()
            form.get_by_role("button", name="Cancel").click()
            expect(form).to_have_count(0)
            print(f"{theme}: lowest contrast compare {min(m['ratio'] for m in compare):.2f}, "
                  f"rollback {min(m['ratio'] for m in rollback):.2f}, "
                  f"update {min(m['ratio'] for m in update):.2f}")  # fmt: skip
        assert (
            lab.api("GET", f"deployments/{deployment_id}")["spec"]["predictors"][0]["replicas"] == 2
        ), "Cancel changed nothing"

        # Logs: a replica's download is named after the replica, not <id>-<id>-0.log.
        detail.get_by_role("tab", name="Logs").click()
        replicas = detail.get_by_label("Replica", exact=True)
        replica = replicas.locator("option").nth(1).get_attribute("value")
        assert replica and replica.startswith(deployment_id)
        replicas.select_option(replica)
        with page.expect_download() as download:
            detail.get_by_role("button", name=re.compile("Download")).click()
        assert download.value.suggested_filename == f"{replica}.log"
        assert console.errors == [], "\n".join(console.errors)
    finally:
        set_theme(page, "JupyterLab Light")
        lab.api("DELETE", f"deployments/{deployment_id}")


def test_create_form_fields_and_errors_beside_them(
    page: Page, lab: Lab, console: ConsoleLog, artifacts: Path
) -> None:
    sidebar = open_sidebar(page)
    sidebar.get_by_role("button", name="Create a deployment").first.click()
    form = page.locator("form.jp-PrimeHub-form")
    expect(form).to_be_visible()
    # PrimeHub's Update Message on create; the pull secret only with a container image.
    expect(field(form, "Update Message")).to_be_visible()
    expect(field(form, "Image pull secret")).to_have_count(0)
    form.get_by_label("A container image").check()
    expect(field(form, "Image pull secret")).to_be_visible()
    form.get_by_label("A model bundle (URI)").check()
    expect(field(form, "Image pull secret")).to_have_count(0)

    # A problem only the server sees lands on its field, in words, never as an API path.
    field(form, "Deployment name").fill("Too long to describe")
    field(form, "Model URI").fill(BUNDLE_DIR)
    field(form, "Description").fill("x" * 4001)
    console.allow_http(422, r"/primehub/api/deployments\?")
    form.get_by_role("button", name="Deploy").click()
    invalid = form.locator(".jp-PrimeHub-field.jp-mod-invalid")
    expect(invalid).to_have_count(1, timeout=SOON)
    expect(invalid.locator("label")).to_have_text("Description")
    expect(invalid.locator(".jp-PrimeHub-field-error")).to_contain_text("4000 characters")
    expect(form).not_to_contain_text("spec.")
    expect(field(form, "Description")).to_have_attribute("aria-invalid", "true")
    page.screenshot(path=str(artifacts / "polish-create-error.png"))
    form.get_by_role("button", name="Cancel").click()
    assert lab.api("GET", "deployments")["deployments"] == []
    assert console.errors == [], "\n".join(console.errors)
