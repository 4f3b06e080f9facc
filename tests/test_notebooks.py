"""Every tutorial notebook runs top to bottom on the embedded engine (nbclient, a real kernel)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from .serve_helpers import Serve as Server

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))

# What each tutorial must visibly show when it has run.
VEGA_LITE = "application/vnd.vegalite.v5+json"
EXPECTED = {
    "01-quickstart.ipynb": ["iris-quickstart", "is Deployed", "ph-card", "is Stopped", "deleted"],
    "02-custom-model.ipynb": [
        "iris-centroids) is Deployed",
        "nearest-centroid",
        "setosa",
        "deleted",
    ],
    "03-private-endpoint.ipynb": ["401", "(200, 401)", "user=billing-service", "deleted"],
    "04-update-history-rollback.ipynb": [
        "try a shallow tree",
        "Model URI",  # %phdeploy diff in PrimeHub's words
        "rollback to revision 1",
        "deleted",
    ],
    "05-monitoring.ipynb": ["'predictRequests'", VEGA_LITE, "Model Deployments", "deleted"],
    "06-yaml-and-cli.ipynb": [
        "Iris from YAML",
        "iris-from-cli: Deployed",
        '"ndarray"',
        "scale out",
        "deleted",
    ],
    "07-tabular.ipynb": [
        "penguins (penguins-",
        "is Deployed",
        "Anvers",  # the island the model never saw, sent in the DataFrame
        "(200, ['Adelie', 'Chinstrap', 'Gentoo'])",  # ODAHU's answer names the classes
        "400 column 'bill_length_mm' takes numbers",
        "/api/model/info",
        "'/api/model/invoke'",  # a route of the catalog document
        "deleted",
    ],
    "08-canary-and-scale.ipynb": [
        "('v2', 10, 'Deployed')",  # the canary's status after the update
        "two-proportion z-test",  # the comparison names its test
        "promote v2",  # the history records the promotion
        "('v2', ['v2'])",  # every answer now comes from v2, the only predictor left
        "('ScaledToZero', 0)",
        "answered 200 after",  # the first request to zero replicas is held, then answered
        "deleted",
    ],
    "09-batch-jobs.ipynb": [
        "penguins-batch (penguins-batch-",
        "Succeeded · 99,997 of 100,000 rows scored, 3 failed",  # the progress's text twin
        "rows/s",
        "99997 rows scored",
        "penguins-100k.scored.csv.errors.jsonl",  # the errors file beside the output
        "Succeeded · 344 of 344 rows scored",
        "deleted",
    ],
}


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("notebooks")
    server = Server(root / "data", root / "serve.log", "--LocalEngine.metrics_interval=1")
    server.start()
    yield server
    server.stop()


def outputs_of(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            parts.append(str(output.get("text", "")))
            for mime in ("text/plain", "text/html"):
                parts.append(str(output.get("data", {}).get(mime, "")))
            if VEGA_LITE in output.get("data", {}):
                parts.append(VEGA_LITE)  # a chart JupyterLab's Vega renderer draws
            if output.get("output_type") == "error":
                parts.append(f"TRACEBACK {output.get('ename')}: {output.get('evalue')}")
    return "\n".join(parts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, api_server: Server, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PRIMEHUB_API_URL", api_server.url)
    monkeypatch.setenv("PRIMEHUB_API_TOKEN", api_server.token)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    text = outputs_of(nb)
    assert "TRACEBACK" not in text and "Error:" not in text, text[-3000:]
    assert "command not found" not in text, text[-3000:]  # a `!` line that did not expand
    assert "\x1b[2K" not in text, "a live terminal redraw leaked into the notebook"
    for expected in EXPECTED[path.name]:
        assert expected in text, f"{path.name} does not show {expected!r}"


def test_every_tutorial_is_there():
    names = {p.name for p in NOTEBOOKS}
    assert names == set(EXPECTED)
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
            f"{path.name} is committed with outputs"
        )
