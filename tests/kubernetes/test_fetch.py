"""The model initializer: paths, archives over HTTP, S3 (SigV4) and the MLflow registry."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from aiohttp import web

from primehub_jupyter.engines.kubernetes.fetch import FetchError, fetch, sigv4_headers

from .fakeapi import Background, serve
from .storage import S3_ACCESS_KEY, S3_SECRET_KEY, Storage


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[str, Storage]]:
    root = tmp_path / "store"
    root.mkdir()
    storage = Storage(root)
    background = Background()
    background.start()

    async def start() -> tuple[web.AppRunner, int]:
        app = web.Application()
        storage.add_routes(app)
        return await serve(app)

    runner, port = background.call(start)
    try:
        yield f"http://127.0.0.1:{port}", storage
    finally:
        background.call(runner.cleanup)
        background.stop()


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    path = tmp_path / "iris-bundle"
    (path / "sub").mkdir(parents=True)
    (path / "bundle.yaml").write_text("formatVersion: 1\nruntime: sklearn\n")
    (path / "model.joblib").write_bytes(b"\x00model")
    (path / "sub" / "extra.txt").write_text("x")
    return path


def same_tree(a: Path, b: Path) -> bool:
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    return files(a) == files(b)


def test_aws_signature_v4_matches_the_published_examples():
    # The GET Object and ListObjects examples of Amazon S3's "Signature Version 4" documentation.
    moment = datetime(2013, 5, 24, tzinfo=timezone.utc)
    keys = {
        "region": "us-east-1",
        "access_key": "AKIAIOSFODNN7EXAMPLE",
        "secret_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "now": moment,
    }
    get = sigv4_headers(
        "GET",
        "https://examplebucket.s3.amazonaws.com/test.txt",
        headers={"Range": "bytes=0-9"},
        **keys,
    )
    assert get["authorization"].endswith(
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )
    listing = sigv4_headers(
        "GET", "https://examplebucket.s3.amazonaws.com/?max-keys=2&prefix=J", **keys
    )
    assert listing["authorization"].endswith(
        "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
    )


def test_a_directory_and_an_archive_on_a_volume(bundle, tmp_path):
    fetch(f"file://{bundle}", tmp_path / "a")
    assert same_tree(bundle, tmp_path / "a")
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in bundle.rglob("*"):
            if p.is_file():
                zf.write(p, f"iris-bundle/{p.relative_to(bundle)}")
    fetch(str(archive), tmp_path / "b")  # a zip of one folder becomes the bundle itself
    assert same_tree(bundle, tmp_path / "b")
    with pytest.raises(FetchError, match="does not exist on the volume"):
        fetch("file:///nowhere/at/all", tmp_path / "c")


def test_an_archive_over_http(store, bundle, tmp_path):
    url, storage = store
    with tarfile.open(storage.root / "iris.tar.gz", "w:gz") as tar:
        tar.add(bundle, arcname=".")
    fetch(f"{url}/files/iris.tar.gz", tmp_path / "out")
    assert same_tree(bundle, tmp_path / "out")
    (storage.root / "plain.txt").write_text("not an archive")
    with pytest.raises(FetchError, match=r"is not a \.tar\.gz or \.zip archive"):
        fetch(f"{url}/files/plain.txt", tmp_path / "plain")
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch(f"{url}/files/missing.tar.gz", tmp_path / "missing")


def test_an_archive_that_escapes_is_refused(store, tmp_path):
    url, storage = store
    data = b"evil"
    with tarfile.open(storage.root / "evil.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(FetchError, match="outside the bundle"):
        fetch(f"{url}/files/evil.tar.gz", tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()


def test_s3_prefix_and_archive_with_signed_requests(store, bundle, tmp_path, monkeypatch):
    url, storage = store
    shutil.copytree(bundle, storage.root / "models" / "iris" / "v1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"{url}/s3")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
    fetch("s3://models/iris/v1/", tmp_path / "prefix")
    assert same_tree(bundle, tmp_path / "prefix")
    assert storage.s3_requests and "list-type=2" in storage.s3_requests[0]

    with tarfile.open(storage.root / "models" / "iris.tgz", "w:gz") as tar:
        tar.add(bundle, arcname="iris-bundle")
    fetch("s3://models/iris.tgz", tmp_path / "archive")
    assert same_tree(bundle, tmp_path / "archive")

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(FetchError, match="HTTP 403"):
        fetch("s3://models/iris/v1/", tmp_path / "denied")


def test_mlflow_registry(store, bundle, tmp_path, monkeypatch):
    url, storage = store
    shutil.copytree(bundle, storage.root / "mlflow" / "1" / "run" / "artifacts" / "model")
    storage.mlflow_models[("iris", "3")] = "1/run/artifacts/model"
    with pytest.raises(FetchError, match="needs MLFLOW_TRACKING_URI"):
        fetch("models:/iris/3", tmp_path / "none")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"{url}/mlflow")
    fetch("models:/iris/3", tmp_path / "out")
    assert same_tree(bundle, tmp_path / "out")
    with pytest.raises(FetchError, match="RESOURCE_DOES_NOT_EXIST"):
        fetch("models:/iris/4", tmp_path / "missing")


def test_the_command_writes_the_termination_log(tmp_path):
    log = tmp_path / "termination-log"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "primehub_jupyter.engines.kubernetes.fetch",
            "--termination-log",
            str(log),
            "gs://bucket/model",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert log.read_text().strip() == "the scheme of gs://bucket/model is not supported"
    assert "error: the scheme" in done.stderr
