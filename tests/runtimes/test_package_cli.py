"""`primehub-deploy package` (bare, build, test), build contexts and packaging errors."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap

import joblib
import pytest
import yaml
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression

from primehub_jupyter import __version__
from primehub_jupyter.cli import cli
from primehub_jupyter.serving.bundle_check import compare_responses
from primehub_jupyter.serving.errors import PackagingError
from primehub_jupyter.serving.packaging import package

from .helpers import REPO, descriptor, iris


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    X, y = iris()
    path = tmp_path_factory.mktemp("models") / "iris.joblib"
    joblib.dump(LogisticRegression(max_iter=500).fit(X, y), path)
    return path


@pytest.fixture(scope="module")
def bundle(model_file, tmp_path_factory):
    """A bundle written by the bare `package MODEL -o BUNDLE` form."""
    out = tmp_path_factory.mktemp("cli") / "iris-bundle"
    result = CliRunner().invoke(
        cli, ["package", str(model_file), "-o", str(out), "--sample", "[[5.1, 3.5, 1.4, 0.2]]"]
    )
    assert result.exit_code == 0, result.output
    assert "bundle written to" in result.output
    return out


def run(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "primehub_jupyter.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )


def test_bare_and_explicit_forms_write_the_same_kind_of_bundle(bundle, model_file, tmp_path):
    data = descriptor(bundle)
    assert data["name"] == "iris" and data["framework"] == "sklearn"
    assert data["sample"]["request"] == {"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2]]}}
    result = CliRunner().invoke(
        cli,
        [
            "package",
            "create",
            str(model_file),
            "-o",
            str(tmp_path / "b"),
            "--name",
            "other",
            "--predict-method",
            "predict",
            "--class-names",
            "a,b,c",
        ],
    )
    assert result.exit_code == 0, result.output
    other = descriptor(tmp_path / "b")
    assert (other["name"], other["predictMethod"]) == ("other", "predict")
    again = CliRunner().invoke(cli, ["package", str(model_file), "-o", str(tmp_path / "b")])
    assert again.exit_code == 1 and "already exists and is not empty" in again.output
    forced = CliRunner().invoke(
        cli, ["package", str(model_file), "-o", str(tmp_path / "c"), "--framework", "onnx"]
    )
    assert forced.exit_code == 1 and "is not a saved onnx model" in forced.output


def test_help_lists_the_subcommands():
    result = CliRunner().invoke(cli, ["package", "--help"])
    assert result.exit_code == 0
    for word in ("create", "build", "test", "package MODEL -o BUNDLE"):
        assert word in result.output


def test_build_context(bundle):
    dockerfile = (bundle / "build" / "Dockerfile").read_text()
    lines = [line for line in dockerfile.splitlines() if line and not line.startswith("#")]
    assert lines[0] == f"FROM ghcr.io/primehub-io/primehub-model-server:{__version__}"
    env = dockerfile[dockerfile.index("ENV ") : dockerfile.index("PERSISTENCE=0") + 13]
    assert 'MODEL_NAME="iris"' in env
    for setting in ("SERVICE_TYPE=MODEL", "API_TYPE=REST", "PERSISTENCE=0"):
        assert setting in env
    assert "COPY requirements.txt /tmp/model-requirements.txt" in lines
    assert any(
        line.startswith("RUN pip install --no-cache-dir -r /tmp/model-requirements.txt")
        for line in lines
    )
    assert "COPY . /mnt/models" in lines
    cmd = json.loads(lines[-1].removeprefix("CMD "))
    assert cmd[:3] == ["primehub-deploy", "model-server", "/mnt/models"]
    assert cmd[cmd.index("--port") + 1] == "9000" and cmd[cmd.index("--host") + 1] == "0.0.0.0"
    ignored = (bundle / ".dockerignore").read_text().splitlines()
    assert "build/" in ignored and "**/__pycache__" in ignored


def test_custom_bundles_name_the_class_in_model_name(tmp_path):
    source = tmp_path / "Echo.py"
    source.write_text("class Echo:\n    def predict(self, X, names):\n        return X\n")
    dockerfile = package(source, tmp_path / "echo", sample_input=[[1]]) / "build" / "Dockerfile"
    assert 'ENV MODEL_NAME="Echo"' in dockerfile.read_text()


def test_package_test_passes_on_a_good_bundle(bundle):
    result = run("package", "test", str(bundle))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "request:" in out and "recorded response:" in out and "server response:" in out
    assert "OK: the response matches the recorded one" in out
    recorded = descriptor(bundle)["sample"]["response"]["data"]["ndarray"][0][0]
    assert str(recorded)[:6] in out  # both responses are printed


def test_package_test_fails_on_a_mismatched_bundle(bundle, tmp_path):
    broken = tmp_path / "mismatched"
    broken.mkdir()
    for item in bundle.iterdir():
        if item.is_file():
            (broken / item.name).write_bytes(item.read_bytes())
    data = descriptor(broken)
    data["sample"]["response"]["data"]["ndarray"][0][0] += 0.25
    (broken / "bundle.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    result = run("package", "test", str(broken))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED: the response differs from the recorded one" in result.stderr
    assert "response.data.ndarray[0][0]: expected" in result.stderr


def test_compare_responses_tolerates_rounding_only():
    recorded = {"data": {"names": ["a"], "ndarray": [[0.5, 1]]}, "meta": {"puid": "x"}}
    close = {"data": {"names": ["a"], "ndarray": [[0.50000001, 1]]}, "meta": {"puid": "y"}}
    assert compare_responses(recorded, close) == []
    far = {"data": {"names": ["b"], "ndarray": [[0.6, 1, 2]]}, "meta": {}}
    assert compare_responses(recorded, far) == [
        "response.data.names[0]: expected 'a', got 'b'",
        "response.data.ndarray[0]: expected 2 items, got 3",
    ]


def _fake_builder(directory, name, works):
    """A stand-in for docker (whose daemon cannot run here): records its arguments."""
    refuse = 'echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock." >&2'
    script = directory / name
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> "{directory}/calls.log"\n'
        f'if [ "$1" = info ]; then {"exit 0" if works else refuse + "; exit 1"}; fi\n'
        "exit 0\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_build_without_a_working_builder_prints_the_commands(bundle, tmp_path):
    _fake_builder(tmp_path, "docker", works=False)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    result = run("package", "build", str(bundle), "--image", "team/iris:v1", "--push", env=env)
    assert result.returncode == 0, result.stderr
    assert "docker is installed but its daemon is not reachable: Cannot connect" in result.stderr
    assert "podman is not installed" in result.stderr
    assert "No image was built" in result.stdout
    dockerfile = bundle / "build" / "Dockerfile"
    assert f"docker build -f {dockerfile} -t team/iris:v1 {bundle}" in result.stdout
    assert "docker push team/iris:v1" in result.stdout
    assert f"buildah bud -f {dockerfile} -t team/iris:v1 {bundle}" in result.stdout
    strict = run(
        "package", "build", str(bundle), "--image", "team/iris:v1", "--require-builder", env=env
    )
    assert strict.returncode == 1
    assert (tmp_path / "calls.log").read_text().splitlines() == ["info", "info"]


def test_build_runs_a_working_builder(bundle, tmp_path):
    _fake_builder(tmp_path, "docker", works=True)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    result = run("package", "build", str(bundle), "--image", "team/iris:v2", "--push", env=env)
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls == [
        "info",
        f"build -f {bundle / 'build' / 'Dockerfile'} -t team/iris:v2 {bundle}",
        "push team/iris:v2",
    ]
    assert "built team/iris:v2 and pushed it" in result.stdout
    bad = run("package", "build", str(bundle), "--image", "Not An Image", env=env)
    assert bad.returncode == 1 and "is not an image name" in bad.stderr


def test_unknown_objects_name_every_supported_framework(tmp_path):
    with pytest.raises(PackagingError) as caught:
        package({"weights": [1, 2]}, tmp_path / "out")
    message = str(caught.value)
    for name in (
        "scikit-learn",
        "XGBoost",
        "LightGBM",
        "PyTorch",
        "Keras",
        "TensorFlow",
        "ONNX",
        "MLflow",
        "your own Python class",
    ):
        assert name in message, message

    class HasPredict:
        def predict(self, X):
            return X

    with pytest.raises(PackagingError, match="pass the class itself"):
        package(HasPredict(), tmp_path / "out")
    with pytest.raises(PackagingError, match="unknown framework 'caffe': supported are sklearn"):
        package(HasPredict(), tmp_path / "out", framework="caffe")
    with pytest.raises(PackagingError, match="framework='xgboost', but the model is a"):
        package(LogisticRegression(), tmp_path / "out", framework="xgboost")
    assert not (tmp_path / "out").exists()


def test_a_non_empty_directory_is_never_overwritten(model_file, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(PackagingError, match="already exists and is not empty"):
        package(str(model_file), tmp_path)
    with pytest.raises(PackagingError, match="is not a model bundle"):
        package(str(model_file), tmp_path, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_serving_and_packaging_sklearn_import_no_other_framework(bundle, model_file, tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        from primehub_jupyter.serving.bundle import load_bundle
        from primehub_jupyter.serving.packaging import package
        from primehub_jupyter.serving.registry import load_runtime
        b = package({str(model_file)!r}, {str(tmp_path / "b")!r})
        load_runtime(b, load_bundle(b))
        heavy = {{"torch", "keras", "xgboost", "lightgbm", "onnxruntime", "mlflow", "tensorflow"}}
        print(sorted(heavy & set(sys.modules)))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
