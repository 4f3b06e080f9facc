"""Every tutorial notebook runs top to bottom on the embedded engine (nbclient, a real kernel)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from .test_cli import Server

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.fixture
def api_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    server = Server(tmp_path / "data", tmp_path / "serve.log")
    server.start()
    monkeypatch.setenv("PRIMEHUB_API_URL", server.url)
    monkeypatch.setenv("PRIMEHUB_API_TOKEN", server.token)
    yield server
    server.stop()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, api_server: Server, tmp_path: Path):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = "\n".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
        for cell in nb.cells
        if cell.cell_type == "code"
        for o in cell.get("outputs", [])
    )
    assert "Traceback" not in outputs
    if path.name.startswith("01-"):
        assert "Deployed: http://127.0.0.1:" in outputs
        assert "one replica is enough" in outputs
        assert "Stopped" in outputs


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ must hold the tutorials"
