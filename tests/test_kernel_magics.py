"""The magics in a real IPython kernel against a real server: no mocked HTTP."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from jupyter_client.manager import KernelManager

from primehub_jupyter.core.charts import CHART_IDS
from primehub_jupyter.core.errors import FEATURE_DISABLED_MESSAGE

from .conftest import GROUPS, OWNER
from .serve_helpers import Serve as Server

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


@dataclass
class Result:
    """What a cell printed and displayed."""

    stdout: str = ""
    plain: list[str] = field(default_factory=list)
    html: list[str] = field(default_factory=list)
    mimetypes: list[str] = field(default_factory=list)
    vegalite: list[dict] = field(default_factory=list)
    error: str | None = None
    traceback: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.stdout + "\n".join(self.plain) + "\n".join(self.html)


class Kernel:
    """A python3 kernel with its own client; `run` executes a cell and collects its output."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(env=env, cwd=str(cwd))
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def _collect(self, result: Result, msg: dict[str, Any]) -> None:
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            result.stdout += content["text"]
        elif kind in ("display_data", "execute_result", "update_display_data"):
            data = content.get("data", {})
            result.plain.append(data.get("text/plain", ""))
            result.mimetypes += list(data)
            if "application/vnd.vegalite.v5+json" in data:
                result.vegalite.append(data["application/vnd.vegalite.v5+json"])
            if "text/html" in data:
                result.html.append(data["text/html"])
        elif kind == "error":
            result.error = f"{content['ename']}: {content['evalue']}"
            result.traceback = list(content.get("traceback", []))

    def run(self, code: str, timeout: float = 180) -> Result:
        result = Result()
        reply = self.client.execute_interactive(
            code, timeout=timeout, output_hook=lambda m: self._collect(result, m)
        )
        if reply["content"]["status"] == "error" and result.error is None:
            result.error = reply["content"].get("ename", "error")
        return result

    def ok(self, code: str, timeout: float = 180) -> Result:
        result = self.run(code, timeout)
        assert result.error is None, f"{code!r} raised {result.error}\n{result.stdout}"
        assert "Error:" not in result.text, f"{code!r} reported: {result.text}"
        return result

    def shutdown(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    server = Server.with_groups(
        tmp_path_factory.mktemp("kernel"), GROUPS, OWNER, "--LocalEngine.metrics_interval=0.5"
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def kernel(served: Server, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("notebook")
    k = Kernel(served.env, work)
    k.ok("%load_ext primehub_jupyter")
    k.ok(
        "import numpy as np\n"
        "from sklearn.datasets import load_iris\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "from sklearn.tree import DecisionTreeClassifier\n"
        "X, y = load_iris(return_X_y=True)\n"
        "model = LogisticRegression(max_iter=1000).fit(X, y)\n"
        "tree = DecisionTreeClassifier(max_depth=2, random_state=0).fit(X, y)"
    )
    yield k
    k.shutdown()


def test_deploy_update_diff_rollback_and_lifecycle(kernel: Kernel):
    out = kernel.ok('d = %deploy model --name iris-magic --metadata team=ds --description "v1"')
    assert "iris-magic" in out.text and "is Deployed" in out.text
    assert 'data-phase="Deployed"' in "".join(out.html)  # the live progress ends green
    card = kernel.ok("d")
    assert "ph-card" in card.html[0] and "#2e7d32" in card.html[0]  # green: Deployed
    assert "curl -X POST" in card.html[0] and "client-name" not in card.html[0]
    assert "Deployment(id='iris-magic-" in card.plain[0]
    kernel.ok("ID = d.id")

    same = kernel.ok(
        "p = %phdeploy invoke {ID} X[:3]\nprint(np.allclose(p, model.predict_proba(X[:3])))"
    )
    assert same.stdout.strip() == "True"
    raw = kernel.ok("r = %phdeploy invoke {ID} [5.1, 3.5, 1.4, 0.2] --raw\nprint(sorted(r))")
    assert "'data'" in raw.stdout and "'meta'" in raw.stdout
    kernel.ok("assert np.allclose(d.invoke(X[:2]), model.predict_proba(X[:2]))")

    # Deploying the same name again updates it: history grows, the id stays.
    out = kernel.ok('d2 = %deploy tree --name iris-magic --update-message "a tree now"')
    assert kernel.ok("print(d2.id == ID, d2.phase)").stdout.strip() == "True Deployed"
    kernel.ok("assert np.allclose(d2.invoke(X[:3]), tree.predict_proba(X[:3]))")
    history = kernel.ok("%phdeploy history {ID}")
    assert "a tree now" in history.text and "team=ds" in history.text
    diff = kernel.ok("%phdeploy diff {ID} 1 2")
    assert "Model URI" in diff.text and "Update Message" in diff.text  # PrimeHub's words
    assert "predictors.0" not in diff.text and "updateMessage" not in diff.text
    assert "Group" not in diff.text  # unchanged fields are not listed

    kernel.ok("%phdeploy rollback {ID} 1")
    kernel.ok("assert np.allclose(d.refresh().invoke(X[:3]), model.predict_proba(X[:3]))")
    history = kernel.ok("h = d.history()\nprint([e['revision'] for e in h], h[0]['updateMessage'])")
    assert history.stdout.strip() == "[3, 2, 1] rollback to revision 1"

    logs = kernel.ok("%phlogs {ID} --tail 5")
    lines = [line for line in logs.stdout.splitlines() if line.strip()]
    assert 0 < len(lines) <= 5 and all(STAMP.match(line) for line in lines)
    listing = kernel.ok("%phdeploy list")
    assert "iris-magic" in listing.text and 'data-phase="Deployed"' in "".join(listing.html)
    metrics = kernel.ok("%phdeploy metrics {ID} --window 60 --step 5")
    # Charts for JupyterLab's own Vega renderer, the totals as the text/plain fallback.
    assert "application/vnd.vegalite.v5+json" in metrics.mimetypes and not metrics.html
    (spec,) = metrics.vegalite
    assert [c["name"] for c in spec["concat"]] == list(CHART_IDS)
    assert re.search(r"last 60 s: [1-9]\d* requests", "".join(metrics.plain)), metrics.plain

    stopped = kernel.ok("%phdeploy stop {ID}")
    assert "is Stopped" in stopped.text
    started = kernel.ok("%phdeploy start {ID}")
    assert "is Deployed" in started.text
    deleted = kernel.ok("%phdeploy delete {ID}")
    assert "deleted" in deleted.stdout
    gone = kernel.run("%phdeploy get {ID}")
    assert_one_line_failure(gone, "not found")


def test_private_endpoint_clients_from_the_notebook(kernel: Kernel):
    kernel.ok("p = %deploy model --name iris-secret --private")
    card = kernel.ok("p")
    assert "-u &#x27;&lt;client-name&gt;:&lt;client-token&gt;&#x27;" in card.html[0]
    added = kernel.ok("c = %phdeploy clients {p.id} add billing\nc")
    assert "will not be shown again" in "".join(added.html)
    code = (
        "import requests\n"
        "print(requests.post(p.endpoint, json={'data': {'ndarray': [[1, 2, 3, 4]]}}).status_code,"
        " requests.post(p.endpoint, json={'data': {'ndarray': [[1, 2, 3, 4]]}},"
        " auth=('billing', c['token'])).status_code)"
    )
    assert kernel.ok(code).stdout.split() == ["401", "200"]
    names = kernel.ok("%phdeploy clients {p.id}")
    assert "billing" in names.text
    leaked = kernel.ok("print(c['token'] in str(p.refresh().data))")
    assert leaked.stdout.strip() == "False"
    kernel.ok("%phdeploy delete {p.id}")


def test_errors_are_one_readable_line(kernel: Kernel):
    cases = {
        "%deploy nothere": "Error: no variable 'nothere' in the notebook",
        "%deploy model --group research": f"Error: {FEATURE_DISABLED_MESSAGE}",
        "%deploy model --group nope": "Error: group 'nope' not found",
        "%deploy model --replicas many": "argument --replicas: invalid int value",
        "%deploy model --instance-type gpu-9": "instance type 'gpu-9' not found",
        "%phdeploy get missing-one": "Error: deployment 'missing-one' not found",
        "%phdeploy bogus": "Error: unknown command 'bogus'",
        "%phdeploy invoke x undefined_name": "cannot evaluate 'undefined_name'",
        "%phlogs": "the following arguments are required: id",
    }
    for code, expected in cases.items():
        result = kernel.run(code)
        assert_one_line_failure(result, expected)
    # The cell stops, so "Run All" stops too: nothing after the failed magic runs, and the
    # assignment never happens (later cells cannot fail on `d = None`).
    stopped = kernel.run("d_missing = %deploy no_such_var\nprint('after the magic')")
    assert_one_line_failure(stopped, "no variable 'no_such_var'")
    assert "after the magic" not in stopped.stdout
    assert "NameError" in (kernel.run("d_missing").error or "")


def assert_one_line_failure(result: Result, expected: str) -> None:
    """The magic raised: the cell is an error shown as one line, never our traceback."""
    assert result.error is not None and result.error.startswith("MagicFailed"), result.error
    shown = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(result.traceback))
    assert len(result.traceback) == 1 and expected in shown, shown
    assert "Traceback" not in shown and "File " not in shown


def test_deploy_cell_with_a_yaml_spec(kernel: Kernel):
    out = kernel.ok(
        "%%deploy iris-yaml\n"
        "name: Iris from YAML\n"
        "model: model\n"
        "replicas: 2\n"
        "instanceType: cpu-0.5\n"
        "description: written as YAML\n"
        "metadata:\n  source: notebook\n"
    )
    assert "Iris from YAML (iris-yaml) is Deployed" in out.text
    data = kernel.ok(
        "y = %phdeploy get iris-yaml\n"
        "p0 = y.spec['predictors'][0]\n"
        "print(p0['replicas'], p0['metadata'], y.spec['description'])"
    )
    assert data.stdout.strip() == "2 {'source': 'notebook'} written as YAML"
    # The same cell with another replica count updates it (the id names it).
    kernel.ok("%%deploy iris-yaml\nname: Iris from YAML\nreplicas: 1\n")
    replicas = kernel.ok("print(y.refresh().spec['predictors'][0]['replicas'])")
    assert replicas.stdout.strip() == "1"
    bad = kernel.run("%%deploy\nname: [unclosed\n")
    assert_one_line_failure(bad, "neither a model class nor valid YAML")
    kernel.ok("%phdeploy delete iris-yaml")


def _connections(pid: int, port: int) -> int:
    proc = psutil.Process(pid)
    return sum(
        1
        for c in proc.net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


def test_phlogs_follow_streams_until_interrupted_without_leaking(kernel: Kernel, served: Server):
    kernel.ok("f = %deploy model --name iris-follow")
    fid = kernel.ok("print(f.id)").stdout.strip()
    pid = kernel.manager.provisioner.pid  # the kernel process
    before = _connections(pid, served.port)
    msg_id = kernel.client.execute(f"%phlogs {fid} --follow --tail 2")
    seen = ""
    deadline = time.monotonic() + 60
    interrupted = False
    while time.monotonic() < deadline:
        try:
            msg = kernel.client.get_iopub_msg(timeout=2)
        except Exception:
            msg = None
        if msg and msg["parent_header"].get("msg_id") == msg_id:
            if msg["msg_type"] == "stream":
                seen += msg["content"]["text"]
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        if seen.count("\n") >= 2 and not interrupted:
            during = _connections(pid, served.port)
            assert during >= 1
            kernel.manager.interrupt_kernel()
            interrupted = True
    assert interrupted, seen
    assert "(stopped following)" in seen
    assert all(STAMP.match(line) for line in seen.splitlines()[:2])
    # The follow connection was closed; pooled keep-alive connections may remain, no more.
    assert _connections(pid, served.port) <= max(before, 1)
    kernel.ok("%phdeploy delete {f.id}")


def test_deploy_cell_with_a_seldon_style_class(kernel: Kernel):
    kernel.ok("np.save('offset.npy', np.array([10.0, 20.0]))")
    out = kernel.ok(
        "%%deploy iris-class --sample [[1.0, 2.0]]\n"
        "import numpy as np\n\n"
        "class AddOffset:\n"
        "    artifacts = ['offset.npy']\n"
        "    def load(self):\n"
        "        self.offset = np.load('offset.npy')\n"
        "    def predict(self, X, features_names, meta=None):\n"
        "        return np.asarray(X) + self.offset\n"
    )
    assert "AddOffset (iris-class) is Deployed" in out.text
    served = kernel.ok("c = %phdeploy get iris-class\nprint(c.invoke([[1.0, 2.0]]).tolist())")
    assert served.stdout.strip() == "[[11.0, 22.0]]"
    local = kernel.ok("m = AddOffset()\nm.load()\nprint(m.predict([[1.0, 2.0]], None).tolist())")
    assert local.stdout.strip() == "[[11.0, 22.0]]"  # the class exists in the notebook too
    bad = kernel.run(
        "%%deploy\nclass Nothing:\n    def predict(self):\n        raise NotImplementedError(\n"
    )
    assert_one_line_failure(bad, "")
    kernel.ok("%phdeploy delete iris-class")


def test_invoke_takes_a_list_an_array_or_a_dataframe(kernel: Kernel):
    pytest.importorskip("pandas")
    kernel.ok("frame = %deploy model --name iris-frames")
    code = (
        "import pandas as pd\n"
        "df = pd.DataFrame(X[:3], columns=['sl', 'sw', 'pl', 'pw'])\n"
        "expected = model.predict_proba(X[:3])\n"
        "from_frame = %phdeploy invoke {frame.id} df\n"
        "from_list = %phdeploy invoke {frame.id} X[:3].tolist()\n"
        "from_array = frame.invoke(X[:3])\n"
        "raw = frame.invoke(df, raw=True)\n"
        "print(type(from_frame).__name__, all(np.allclose(p, expected) for p in "
        "(from_frame, from_list, from_array)), sorted(raw['data']))"
    )
    out = kernel.ok(code)
    # A DataFrame is answered with a DataFrame of the model's classes; lists and arrays numpy.
    assert out.stdout.strip() == "DataFrame True ['names', 'ndarray']"
    columns = kernel.ok("print(list(from_frame.columns), type(from_list).__name__)")
    assert columns.stdout.strip() == "['0', '1', '2'] ndarray"
    kernel.ok("%phdeploy delete {frame.id}")


def test_history_and_diff_in_primehub_words_and_errors_name_the_flag(kernel: Kernel):
    """Issue 13 (items 7, 11): no JSON paths where the user typed flags or reads history."""
    kernel.ok("w = %deploy model --name iris-words --no-wait\nWID = w.id")
    kernel.ok("%phdeploy stop {WID}")
    history = kernel.ok("%phdeploy history {WID}")
    shown = history.text
    for header in ("Revision", "Deployment Stopped", "Model Image / URI", "Replicas",
                   "Instance Type", "Access Type", "Update Message"):  # fmt: skip
        assert header in shown, shown
    assert "predictors" not in shown and "stopped" not in shown.split("\n")[0]
    diff = kernel.ok("%phdeploy diff {WID} 1 2")
    row = next(line for line in diff.plain[0].splitlines() if "Deployment Stopped" in line)
    assert row.split()[-2:] == ["No", "Yes"], diff.plain[0]  # "Deployment Stopped: No -> Yes"
    assert "stop " not in diff.plain[0] and "false" not in diff.plain[0]

    # The API says `spec.predictors.0.replicas`; the user typed --replicas.
    failed = kernel.run("%deploy model --name iris-words --replicas 0")
    assert_one_line_failure(failed, "--replicas:")
    shown = re.sub(r"\x1b\[[0-9;]*m", "", failed.traceback[0])
    assert "spec.predictors" not in shown and "greater than or equal to 1" in shown, shown
    kernel.ok("%phdeploy delete {WID}")
