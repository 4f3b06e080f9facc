"""Deployment: a deployment as a Python object with a rich card, and request payload helpers."""

from __future__ import annotations

import json
import re
import types
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .client import Client
from .display import (
    PHASE_COLORS,
    Progress,
    copy_button,
    esc,
    in_notebook,
    phase_badge,
    predictor_replicas,
    time_html,
)
from .examples import curl_example


def package_for_deploy(model: Any, name: str, **options: Any) -> str:
    """Package a notebook model into a new bundle folder; its absolute path (the modelURI).

    Every deploy gets its own folder (`.primehub/bundles/<name>/<UTC time>`), so each history
    entry keeps pointing at the model it deployed and a rollback brings that model back.
    """
    from ..serving.packaging import package

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "model"
    target = Path.cwd() / ".primehub" / "bundles" / slug / stamp
    kwargs = {"name": name, **{k: v for k, v in options.items() if v is not None}}
    return str(Path(package(model, target, **kwargs)).resolve())


def looks_like_model(value: Any) -> bool:
    """Whether a notebook variable could be deployed: a fitted model, or a model class."""
    if isinstance(value, types.ModuleType | types.FunctionType):
        return False
    if isinstance(value, type):
        return callable(getattr(value, "predict", None)) and value.__module__ == "__main__"
    return callable(getattr(value, "predict", None))


#: ODAHU's table route (serving/catalog.py INVOKE_PATH, without its slash).
ODAHU_PATH = "api/model/invoke"


def _is_frame(data: Any) -> bool:
    # Duck-typed, so the kernel needs pandas only when the user has DataFrames.
    return hasattr(data, "to_numpy") and hasattr(data, "columns") and hasattr(data, "itertuples")


def to_payload(data: Any, path: str = "api/v1.0/predictions") -> dict[str, Any]:
    """A request from a list, a numpy array or a pandas DataFrame: Seldon v1, or ODAHU's
    `{"columns", "data"}` when `path` is its `api/model/invoke`.

    A DataFrame goes as `data.names` plus rows of JSON values (numbers, text, true/false,
    ISO 8601 date-times, null for NaN/None/NaT): the server reads them back into a frame
    with the dtypes the model was fitted with (a table signature), or as numbers (a tensor).
    """
    if isinstance(data, dict) and ("data" in data or "strData" in data or "jsonData" in data):
        return data
    odahu = path.strip("/").endswith(ODAHU_PATH)
    if _is_frame(data):
        from ..serving.tables import request_rows

        table = request_rows(data)
        if odahu:
            return {"columns": table["names"], "data": table["ndarray"]}
        return {"data": table}
    if hasattr(data, "tolist"):
        data = data.tolist()
    if not isinstance(data, list):
        raise TypeError(
            f"cannot send a {type(data).__name__}: give a list, a numpy array or a DataFrame"
        )
    if data and not isinstance(data[0], list):
        data = [data]  # one row
    return {"data": data} if odahu else {"data": {"ndarray": data}}


# Seldon's positional column names (t:0, t:1, ...): the model named nothing.
_POSITIONAL = re.compile(r"t:\d+")


def _output_names(response: dict[str, Any]) -> list[str] | None:
    """The model's own names for its output columns (classes, outputs), if it has them."""
    if "prediction" in response:  # ODAHU's {"prediction", "columns"}
        names = response.get("columns")
    else:
        names = (response.get("data") or {}).get("names")
    if not isinstance(names, list) or not names:
        return None
    if all(isinstance(n, str) and _POSITIONAL.fullmatch(n) for n in names):
        return None
    return [str(n) for n in names]


def from_response(response: Any, sent: Any = None) -> Any:
    """The predictions of a Seldon v1 (or ODAHU) response: a numpy array, or, when `sent` is
    a DataFrame and the model names its output columns, a DataFrame with those columns
    (and the sent frame's index)."""
    import numpy as np

    data = response.get("data", {}) if isinstance(response, dict) else {}
    if isinstance(response, dict) and "prediction" in response:
        array = np.asarray(response["prediction"])
    elif "ndarray" in data:
        array = np.asarray(data["ndarray"])
    elif "tensor" in data:
        tensor = data["tensor"]
        array = np.asarray(tensor["values"]).reshape(tensor["shape"])
    else:
        raise ValueError(f"the response holds no ndarray or tensor: {json.dumps(response)[:200]}")
    names = _output_names(response) if _is_frame(sent) else None
    if names is None or array.ndim != 2 or array.shape[1] != len(names):
        return array
    import pandas as pd

    index = sent.index if len(sent.index) == len(array) else None
    return pd.DataFrame(array, columns=names, index=index)


class Deployment:
    """One deployment: read its state, wait for it, call it, change it.

    In Jupyter it shows as a card with its status colour, endpoint and a curl example.
    """

    def __init__(self, data: dict[str, Any], client: Client) -> None:
        self.data = data
        self.client = client

    # ---- state ------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self.data["id"]

    @property
    def spec(self) -> dict[str, Any]:
        return self.data["spec"]

    @property
    def status(self) -> dict[str, Any]:
        return self.data["status"]

    @property
    def name(self) -> str:
        return self.spec["displayName"]

    @property
    def group(self) -> str:
        return self.spec["groupName"]

    @property
    def phase(self) -> str:
        return self.status.get("phase", "")

    @property
    def message(self) -> str:
        return self.status.get("message", "")

    @property
    def endpoint(self) -> str | None:
        return self.status.get("endpoint")

    @property
    def access_type(self) -> str:
        return self.spec["endpoint"]["accessType"]

    @property
    def predictor(self) -> dict[str, Any]:
        return self.spec["predictors"][0]

    def refresh(self) -> Deployment:
        self.data = self.client.get(self.id)
        return self

    def wait(self, phase: str = "Deployed", *, timeout: float = 600, progress: bool = True):
        """Wait for `phase`, showing progress; raises DeploymentFailed with the reason."""
        bar = Progress(f"{self.name} ({self.id})") if progress else None

        def show(data: dict[str, Any]) -> None:
            self.data = data
            if bar is not None:
                bar.update(data["status"]["phase"], data["status"].get("message", ""))

        try:
            self.data = self.client.wait(self.id, phase=phase, timeout=timeout, on_progress=show)
        finally:
            if bar is not None:
                bar.done(f"{self.name} ({self.id}) is {self.phase}", self.phase)
        return self

    # ---- actions ----------------------------------------------------------------------

    def invoke(self, data: Any, *, raw: bool = False, path: str = "api/v1.0/predictions") -> Any:
        """Send rows (list, numpy array, DataFrame with its column names and types) to the
        Seldon route, or to another (`path="api/model/invoke"`: ODAHU).

        The predictions: a DataFrame with the model's output columns (class names) for a
        DataFrame whose model names them, else a numpy array; the whole JSON with `raw`.
        """
        response = self.client.invoke(self.id, to_payload(data, path), path=path)
        return response if raw else from_response(response, data)

    def logs(self, *, tail: int | None = 2000, replica: str | int | None = None) -> str:
        return self.client.logs(self.id, tail=tail, replica=replica)

    def history(self) -> list[dict[str, Any]]:
        return self.client.history(self.id)

    def update(self, spec: dict[str, Any], *, update_message: str | None = None) -> Deployment:
        self.data = self.client.update(self.id, spec, update_message=update_message)
        return self

    def stop(self) -> Deployment:
        self.data = self.client.stop(self.id)
        return self

    def start(self) -> Deployment:
        self.data = self.client.start(self.id)
        return self

    def rollback(self, revision: int) -> Deployment:
        self.data = self.client.rollback(self.id, revision)
        return self

    def delete(self) -> None:
        self.client.delete(self.id)

    def compare(self) -> Any:
        """The predictors side by side with each challenger's significance test (a CompareView)."""
        from .compare import CompareView

        return CompareView(self.client.compare(self.id))

    def promote(self, predictor: str, *, update_message: str | None = None) -> Deployment:
        """Send every request to `predictor` and remove the others (history grows)."""
        self.data = self.client.promote(self.id, predictor, update_message)
        return self

    # ---- batch jobs -------------------------------------------------------------------

    def batch(
        self,
        data: Any,
        output: str | Path | None = None,
        *,
        format: str | None = None,
        predictor: str | None = None,
        chunk_rows: int | None = None,
        output_columns: str = "all",
        overwrite: bool = False,
        wait: bool = True,
        timeout: float | None = None,
        progress: bool = True,
    ) -> Any:
        """Score a file (a path) or a DataFrame with this deployment's model, in a job.

        A DataFrame is written under `.primehub/jobs/` beside the notebook (Parquet, or CSV
        without pyarrow) and the scored rows come back as a DataFrame under its index (the
        input columns with `output_columns="all"`, then the model's columns and request_id);
        a path gives back the output's path (default: `<input>.scored.<ext>`). Relative paths
        are the kernel's working directory's. While it waits a live progress shows (rows,
        rows/s, ETA); interrupting offers to cancel the job. JobFailed when it fails.
        `wait=False` returns the Job at once (its progress stays live, with a Cancel button).
        """
        from .batch_files import default_output, job_folder, local_uri, write_frame
        from .jobs import Job, JobProgress

        index = None
        if _is_frame(data):
            folder = job_folder(self.id)
            written, written_format = write_frame(data, folder)
            input_uri, format, index = str(written), written_format, data.index
            if output is None:
                output = folder / f"output{written.suffix}"
        else:
            input_uri = local_uri(data)
            if output is None:
                output = default_output(input_uri)
        job = Job(
            self.client.create_job(
                self.id,
                input_uri,
                local_uri(output),
                format=format,
                predictor=predictor,
                chunk_rows=chunk_rows,
                output_columns=output_columns,
                overwrite=overwrite,
            ),
            self.client,
        )
        if not wait:
            # A live display only where it redraws in place: a terminal would get lines
            # from a thread in the middle of whatever the user types next.
            if progress and in_notebook():
                JobProgress(self.client, job.data, live=True).show().follow()
            return job
        job.wait(timeout=timeout, progress=progress)
        return job.output if index is None else job.read_output(index)

    def jobs(self) -> Any:
        """This deployment's jobs, newest first (a table; `.to_frame()` for a DataFrame)."""
        from .jobs import JobTable

        return JobTable(self.client.list_jobs(self.id))

    def job(self, job_id: str) -> Any:
        """One job: its record and progress, `cancel()`, `logs()`, `read_output()`."""
        from .jobs import Job

        return Job(self.client.get_job(self.id, job_id), self.client)

    # ---- display ----------------------------------------------------------------------

    def curl_example(self) -> str:
        """A ready-to-paste curl command with the bundle's sample request (a placeholder and
        a note when there is none; a client placeholder when private)."""
        return curl_example(self.data)

    def __repr__(self) -> str:
        return (
            f"Deployment(id={self.id!r}, name={self.name!r}, phase={self.phase!r}, "
            f"endpoint={self.endpoint!r})"
        )

    def _repr_html_(self) -> str:
        color = PHASE_COLORS.get(self.phase, "#757575")
        predictor = self.predictor
        rows = [
            ("Endpoint", f"<code>{esc(self.endpoint or '-')}</code> "
             + (copy_button(self.endpoint) if self.endpoint else "")),
            ("Access", esc(self.access_type)),
            ("Group", esc(self.group)),
            ("Model", esc(predictor.get("modelURI") or predictor.get("modelImage"))),
            *((label, f"{esc(text)} ({esc(predictor['instanceType'])})")
              for label, text in predictor_replicas(self.spec, self.status)),
            ("Last updated", time_html(self.status.get("lastUpdated"))),
        ]  # fmt: skip
        if self.message:
            rows.insert(0, ("Message", esc(self.message)))
        table = "".join(
            f"<tr><th style='text-align:left;padding-right:12px'>{k}</th>"
            f"<td style='text-align:left'>{v}</td></tr>"
            for k, v in rows
        )
        curl = self.curl_example()
        return (
            f'<div class="ph-card" data-deployment="{esc(self.id)}" '
            f'style="border-left:6px solid {color};padding:6px 12px;margin:4px 0">'
            f"<div style='font-size:1.1em'><b>{esc(self.name)}</b> <code>{esc(self.id)}</code> "
            f"{phase_badge(self.phase)}</div>"
            f"<table>{table}</table>"
            f"<div><b>Run an example</b> {copy_button(curl)}</div>"
            f"<pre class='ph-curl' style='white-space:pre-wrap'>{esc(curl)}</pre></div>"
        )
