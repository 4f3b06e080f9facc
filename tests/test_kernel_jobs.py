"""Batch jobs from a real kernel (nbclient): `d.batch(df)`, its progress widget, the magics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from .serve_helpers import Serve, serve_deployed

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, bundles):
    server = serve_deployed(tmp_path_factory.mktemp("kernel-jobs"), bundles["v1"])
    yield server
    server.cleanup()


def run_cells(cells: list[str], cwd: Path, served: Serve, monkeypatch) -> nbformat.NotebookNode:
    monkeypatch.setenv("PRIMEHUB_API_URL", served.url)
    monkeypatch.setenv("PRIMEHUB_API_TOKEN", served.token)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()
    return nb


def texts(cell: nbformat.NotebookNode) -> str:
    parts = []
    for output in cell.get("outputs", []):
        parts.append(str(output.get("text", "")))
        for mime in ("text/plain", "text/html"):
            parts.append(str(output.get("data", {}).get(mime, "")))
    return "\n".join(parts)


def widget_states(nb: nbformat.NotebookNode) -> list[dict]:
    """The last state of every widget the kernel made (nbclient records their comms)."""
    stored = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    return [{"model_name": m["model_name"], **m["state"]} for m in stored.values()]


def test_batch_of_a_dataframe_returns_the_models_predictions_with_a_live_widget(
    served, iris, models, tmp_path, monkeypatch
):
    X, _ = iris
    frame = pd.DataFrame(np.resize(X, (1200, 4)), columns=COLUMNS,
                         index=[f"r{i}" for i in range(1200)])  # fmt: skip
    frame.to_pickle(tmp_path / "frame.pkl")
    nb = run_cells(
        [
            "import pandas as pd\n"
            "from primehub_jupyter import Client\n"
            "from primehub_jupyter.kernel.deployment import Deployment\n"
            f"d = Deployment(Client().get({served.deployment_id!r}), Client())\n"
            "frame = pd.read_pickle('frame.pkl')",
            "scored = d.batch(frame, chunk_rows=100)\nscored.to_pickle('scored.pkl')",
            "d.jobs()",
            f"%load_ext primehub_jupyter\n%phdeploy jobs {served.deployment_id}",
        ],
        tmp_path,
        served,
        monkeypatch,
    )
    scored = pd.read_pickle(tmp_path / "scored.pkl")
    assert list(scored.index) == list(frame.index)  # the input's labels, in order
    predictions = scored.drop(columns=[*COLUMNS, "request_id"])
    assert predictions.shape == (1200, 3)
    expected = models["v1"].predict_proba(frame.to_numpy())
    assert np.allclose(predictions.to_numpy(dtype=float), expected)
    # The input went to a file beside the notebook, the output beside it.
    written = list((tmp_path / ".primehub" / "jobs").glob("*/input.parquet"))
    assert len(written) == 1 and (written[0].parent / "output.parquet").exists()

    states = widget_states(nb)
    bars = [s for s in states if s["model_name"] == "FloatProgressModel"]
    assert bars and bars[-1]["value"] == 1.0 and bars[-1]["bar_style"] == "success"
    stats = [s["value"] for s in states if "ph-job-stats" in str(s.get("value", ""))]
    assert stats and 'data-phase="Succeeded"' in stats[-1]
    assert 'data-rows-scored="1200"' in stats[-1] and "rows/s" in stats[-1]
    # Its text twin says the same for a notebook read without widgets.
    batch_cell = texts(nb.cells[1])
    assert re.search(r"j[0-9a-f]{10}: Succeeded · 1,200 of 1,200 rows scored", batch_cell), (
        batch_cell
    )

    listed, magic = texts(nb.cells[2]), texts(nb.cells[3])
    job_id = re.search(r"j[0-9a-f]{10}", batch_cell)[0]
    for shown in (listed, magic):
        assert job_id in shown and "Succeeded" in shown and "1,200" in shown


def test_magics_batch_show_and_remove_a_job(served, iris, tmp_path, monkeypatch):
    X, _ = iris
    pd.DataFrame(X, columns=COLUMNS).to_csv(tmp_path / "iris.csv", index=False)
    (tmp_path / "out").mkdir()
    deployment = served.deployment_id
    nb = run_cells(
        [
            "%load_ext primehub_jupyter",
            f"%phdeploy batch {deployment} iris.csv -o out/iris-scored.csv",
            "import json\n"
            "from primehub_jupyter import Client\n"
            f"job_id = Client().list_jobs({deployment!r})[0]['id']\n"
            f"get_ipython().run_line_magic('phdeploy', f'job {deployment} {{job_id}}')",
            f"get_ipython().run_line_magic('phdeploy', f'cancel-job {deployment} {{job_id}}')",
            f"print(json.dumps([j['id'] for j in Client().list_jobs({deployment!r})]))",
            "print(job_id)",
        ],
        tmp_path,
        served,
        monkeypatch,
    )
    assert (tmp_path / "out" / "iris-scored.csv").exists()  # relative: the notebook's folder
    assert len(pd.read_csv(tmp_path / "out" / "iris-scored.csv")) == 150
    job_id = texts(nb.cells[5]).strip()
    assert job_id in texts(nb.cells[2]) and "Succeeded" in texts(nb.cells[2])
    assert f"job {job_id}: removed from the history" in texts(nb.cells[3])
    assert job_id not in json.loads(texts(nb.cells[4]).strip())


def test_the_panels_jobs_tab_lists_shows_files_and_cancels(served, iris, tmp_path, monkeypatch):
    from primehub_jupyter.kernel.client import Client
    from primehub_jupyter.kernel.panel_views import DeploymentDetail

    monkeypatch.chdir(tmp_path)  # the output lies under the "notebook": a link opens it
    X, _ = iris
    bad = pd.DataFrame(np.resize(X, (300, 4)), columns=COLUMNS).astype(object)
    bad.iloc[7, 0] = "oops"
    bad.to_csv(tmp_path / "some.csv", index=False)
    pd.DataFrame(np.resize(X, (300_000, 4)), columns=COLUMNS).to_csv(
        tmp_path / "many.csv", index=False
    )
    client = Client(served.url, served.token)
    deployment = served.deployment_id
    done = client.create_job(deployment, str(tmp_path / "some.csv"), str(tmp_path / "some.out.csv"))
    client.wait_job(deployment, done["id"], timeout=120)
    detail = DeploymentDetail(client, deployment, on_back=lambda: None, on_update=lambda _: None)
    detail.tabs.selected_index = DeploymentDetail.TABS.index("Jobs")
    tab = detail.jobs
    assert done["id"] in tab.table.value and tab.job.value == done["id"]
    assert tab.bar.value == 1.0 and 'data-rows-failed="1"' in tab.stats.value
    assert 'href="some.out.csv"' in tab.paths.value  # opens in JupyterLab
    assert "some.out.csv.errors.jsonl" in tab.paths.value
    assert "oops" in tab.errors.value or "sepal_length" in tab.errors.value  # the first failure
    assert tab.cancel_button.disabled  # a finished job cannot be cancelled

    running = client.create_job(
        deployment, str(tmp_path / "many.csv"), str(tmp_path / "many.out.csv"), chunk_rows=100
    )
    tab.load()
    assert tab.job.options[0] == running["id"]  # newest first
    tab.job.value = running["id"]
    assert not tab.cancel_button.disabled
    tab.cancel_button.click()
    yes = next(c for c in tab.confirm.children if getattr(c, "description", "") == "Yes, cancel it")
    yes.click()
    assert client.get_job(deployment, running["id"])["phase"] == "Cancelled"
    assert f"{running['id']}</b> cancelled" in tab.message.value
    tab.logs_button.click()
    assert tab.logs.layout.display is None


def test_an_interrupt_offers_to_cancel_the_job(served, iris, tmp_path):
    import threading
    import time

    from jupyter_client.manager import KernelManager

    from primehub_jupyter.kernel.client import Client

    X, _ = iris
    many = tmp_path / "many.csv"
    pd.DataFrame(np.resize(X, (300_000, 4)), columns=COLUMNS).to_csv(many, index=False)
    client = Client(served.url, served.token)
    deployment = served.deployment_id
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(env=served.env, cwd=str(tmp_path))
    kernel = manager.client()
    kernel.start_channels()
    try:
        kernel.wait_for_ready(timeout=60)
        kernel.execute_interactive(
            "from primehub_jupyter import Client\n"
            "from primehub_jupyter.kernel.deployment import Deployment\n"
            f"d = Deployment(Client().get({deployment!r}), Client())",
            timeout=60,
        )

        def interrupt_once_running() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                jobs = client.list_jobs(deployment)
                if any(j["spec"]["input"] == str(many) and j["rowsRead"] for j in jobs):
                    manager.interrupt_kernel()
                    return
                time.sleep(0.05)

        interrupter = threading.Thread(target=interrupt_once_running)
        interrupter.start()
        prompts: list[str] = []

        def answer(msg) -> None:
            prompts.append(msg["content"]["prompt"])
            kernel.input("y")

        errors: list[str] = []
        reply = kernel.execute_interactive(
            "d.batch('many.csv', output='many.out.csv', chunk_rows=100)",
            allow_stdin=True,
            stdin_hook=answer,
            output_hook=lambda m: (
                errors.append(m["content"].get("evalue", "")) if m["msg_type"] == "error" else None
            ),
            timeout=180,
        )
        interrupter.join()
    finally:
        kernel.stop_channels()
        manager.shutdown_kernel(now=True)
    assert prompts and re.fullmatch(
        r"Interrupted\. Cancel job j[0-9a-f]{10}\? \[Y/n\] ", prompts[0]
    )
    assert reply["content"]["ename"] == "JobFailed" and "cancelled" in reply["content"]["evalue"]
    job = next(j for j in client.list_jobs(deployment) if j["spec"]["input"] == str(many))
    assert job["phase"] == "Cancelled" and job["rowsRead"] < 300_000
