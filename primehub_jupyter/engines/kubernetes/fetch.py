"""The model initializer: fetch a modelURI (path, http(s), s3, MLflow) into the model directory.

Runs as the init container of a model pod:
`python -m primehub_jupyter.engines.kubernetes.fetch [--termination-log F] URI DEST`.
Standard library only, so any image with this package (the model server's) can run it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
CHUNK = 1024 * 1024
TIMEOUT = 60


class FetchError(Exception):
    """The model cannot be fetched; the message is shown to the user as is."""


# ---- AWS Signature Version 4 (GET requests to S3) --------------------------------------


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sigv4_headers(
    method: str,
    url: str,
    *,
    region: str,
    access_key: str,
    secret_key: str,
    session_token: str = "",
    headers: dict[str, str] | None = None,
    now: datetime | None = None,
    payload_hash: str = EMPTY_SHA256,
) -> dict[str, str]:
    """The headers that sign an S3 request (AWS Signature Version 4); `payload_hash` is the
    body's SHA-256 (a PUT), the empty body's by default."""
    now = now or datetime.now(timezone.utc)
    parts = urllib.parse.urlsplit(url)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    signed = {k.lower(): v.strip() for k, v in (headers or {}).items()}
    signed.update(
        {"host": parts.netloc, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    )
    if session_token:
        signed["x-amz-security-token"] = session_token
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    canonical_query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
        for k, v in sorted(query)
    )
    names = sorted(signed)
    canonical = "\n".join(
        [
            method,
            parts.path or "/",
            canonical_query,
            "".join(f"{name}:{signed[name]}\n" for name in names),
            ";".join(names),
            payload_hash,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(
        _hmac(_hmac(_hmac(f"AWS4{secret_key}".encode(), day), region), "s3"), "aws4_request"
    )
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    result = {k: v for k, v in signed.items() if k != "host"}
    result["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return result


# ---- HTTP ------------------------------------------------------------------------------


def _open(url: str, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as error:
        detail = error.read(300).decode(errors="replace").strip()
        raise FetchError(
            f"{url}: HTTP {error.code} {error.reason}{': ' + detail if detail else ''}"
        ) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise FetchError(f"{url}: {reason}") from None


def _download(url: str, target: Path, headers: dict[str, str] | None = None) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with _open(url, headers) as response, open(target, "wb") as out:
        shutil.copyfileobj(response, out, CHUNK)


# ---- archives and directories ----------------------------------------------------------


def _is_archive(path: Path) -> bool:
    return tarfile.is_tarfile(path) or zipfile.is_zipfile(path)


def _inside(root: Path, name: str) -> Path:
    target = (root / name).resolve()
    if target != root.resolve() and root.resolve() not in target.parents:
        raise FetchError(f"the archive member '{name}' would be written outside the bundle")
    return target


def extract(archive: Path, dest: Path) -> None:
    """Unpack a tar (any compression) or zip archive, refusing paths that leave `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                _inside(dest, name)
            zf.extractall(dest)
        return
    with tarfile.open(archive) as tf:
        for member in tf.getmembers():
            _inside(dest, member.name)
            if member.issym() or member.islnk():
                raise FetchError(f"the archive member '{member.name}' is a link; links are refused")
        try:
            tf.extractall(dest, filter="data")
        except TypeError:  # Python without extraction filters: members were checked above
            tf.extractall(dest)


def flatten(dest: Path) -> None:
    """An archive of one folder (iris-bundle/...) becomes the bundle itself."""
    entries = [p for p in dest.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and not (dest / "bundle.yaml").exists():
        inner = entries[0]
        for child in list(inner.iterdir()):
            shutil.move(str(child), dest / child.name)
        inner.rmdir()


def copy_path(source: Path, dest: Path) -> None:
    if not source.exists():
        raise FetchError(f"{source} does not exist on the volume")
    if source.is_dir():
        shutil.copytree(source, dest, dirs_exist_ok=True, symlinks=False)
    elif _is_archive(source):
        extract(source, dest)
    else:
        raise FetchError(f"{source} is a file but not a .tar.gz or .zip archive of a bundle")


# ---- sources ---------------------------------------------------------------------------


def fetch_http(url: str, dest: Path, headers: dict[str, str] | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "download"
        _download(url, archive, headers)
        if not _is_archive(archive):
            raise FetchError(f"{url} is not a .tar.gz or .zip archive of a model bundle")
        extract(archive, dest)


def _s3_endpoint(bucket: str, region: str) -> tuple[str, str]:
    """(base URL, key prefix path) for a bucket: path style on a custom endpoint (MinIO)."""
    custom = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if custom:
        return custom.rstrip("/"), f"/{bucket}"
    return f"https://{bucket}.s3.{region}.amazonaws.com", ""


def _s3_get(url: str, region: str) -> Any:
    access = os.environ.get("AWS_ACCESS_KEY_ID", "")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    headers: dict[str, str] = {}
    if access and secret:
        headers = sigv4_headers(
            "GET",
            url,
            region=region,
            access_key=access,
            secret_key=secret,
            session_token=os.environ.get("AWS_SESSION_TOKEN", ""),
        )
    return _open(url, headers)


def s3_keys(bucket: str, prefix: str, region: str) -> list[str]:
    """Every key under a prefix (ListObjectsV2, following continuation tokens)."""
    base, path = _s3_endpoint(bucket, region)
    keys: list[str] = []
    token = ""
    while True:
        params = {"list-type": "2", "prefix": prefix}
        if token:
            params["continuation-token"] = token
        query = urllib.parse.urlencode(sorted(params.items()), quote_via=urllib.parse.quote)
        url = f"{base}{path}/?{query}"
        with _s3_get(url, region) as response:
            root = ET.fromstring(response.read())
        keys += [el.text or "" for el in root.iter(f"{S3_NS}Key")]
        truncated = (root.findtext(f"{S3_NS}IsTruncated") or "false") == "true"
        token = root.findtext(f"{S3_NS}NextContinuationToken") or ""
        if not truncated or not token:
            return keys


def fetch_s3(uri: str, dest: Path) -> None:
    parts = urllib.parse.urlsplit(uri)
    bucket, prefix = parts.netloc, parts.path.lstrip("/")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    keys = [k for k in s3_keys(bucket, prefix, region) if not k.endswith("/")]
    if not keys:
        raise FetchError(f"{uri}: no objects under this prefix (or no permission to list them)")
    base, path = _s3_endpoint(bucket, region)
    if keys == [prefix]:  # one object: an archive of the bundle
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / "download"
            url = f"{base}{path}/{urllib.parse.quote(prefix)}"
            with _s3_get(url, region) as response, open(archive, "wb") as out:
                shutil.copyfileobj(response, out, CHUNK)
            if not _is_archive(archive):
                raise FetchError(f"{uri} is one object but not a .tar.gz or .zip archive")
            extract(archive, dest)
        return
    folder = prefix if prefix.endswith("/") or not prefix else prefix + "/"
    for key in keys:
        relative = key[len(folder) :] if key.startswith(folder) else Path(key).name
        target = _inside(dest, relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        url = f"{base}{path}/{urllib.parse.quote(key)}"
        with _s3_get(url, region) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out, CHUNK)


def _mlflow_headers() -> dict[str, str]:
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user, password = (
        os.environ.get("MLFLOW_TRACKING_USERNAME"),
        os.environ.get("MLFLOW_TRACKING_PASSWORD"),
    )
    if user and password:
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {basic}"}
    return {}


def _mlflow_json(tracking: str, path: str, params: dict[str, str]) -> Any:
    url = f"{tracking}{path}?{urllib.parse.urlencode(params)}"
    with _open(url, _mlflow_headers()) as response:
        return json.loads(response.read())


def fetch_mlflow_artifacts(tracking: str, artifact_path: str, dest: Path) -> None:
    """Download an mlflow-artifacts:/ directory through the tracking server's artifact proxy."""
    listing = _mlflow_json(tracking, "/api/2.0/mlflow-artifacts/artifacts", {"path": artifact_path})
    files = listing.get("files") or []
    if not files:
        raise FetchError(f"mlflow-artifacts:/{artifact_path} is empty or does not exist")
    for item in files:
        name = item["path"].rsplit("/", 1)[-1]
        full = f"{artifact_path.rstrip('/')}/{name}"
        if item.get("is_dir"):
            fetch_mlflow_artifacts(tracking, full, dest / name)
        else:
            dest.mkdir(parents=True, exist_ok=True)
            quoted = urllib.parse.quote(full)
            _download(
                f"{tracking}/api/2.0/mlflow-artifacts/artifacts/{quoted}",
                _inside(dest, name),
                _mlflow_headers(),
            )


def fetch_mlflow(uri: str, dest: Path) -> None:
    tracking = os.environ.get("MLFLOW_TRACKING_URI", "").rstrip("/")
    if not tracking.startswith(("http://", "https://")):
        raise FetchError(
            f"{uri} needs MLFLOW_TRACKING_URI (http(s)://...) in the deployment's env or the "
            "operator's mlflowTrackingURI setting"
        )
    name, version = [p for p in uri[len("models:/") :].split("/") if p]
    if not version.isdigit():
        latest = _mlflow_json(
            tracking,
            "/api/2.0/mlflow/registered-models/get-latest-versions",
            {"name": name, "stages": version},
        )
        versions = latest.get("model_versions") or []
        if not versions:
            raise FetchError(f"{uri}: model '{name}' has no version in stage '{version}'")
        version = str(versions[0]["version"])
    found = _mlflow_json(
        tracking,
        "/api/2.0/mlflow/model-versions/get-download-uri",
        {"name": name, "version": version},
    )
    artifact = found.get("artifact_uri") or ""
    dest.mkdir(parents=True, exist_ok=True)
    if artifact.startswith("mlflow-artifacts:"):
        path = urllib.parse.urlsplit(artifact).path.lstrip("/")
        fetch_mlflow_artifacts(tracking, path, dest)
    elif artifact.startswith("s3://"):
        fetch_s3(artifact, dest)
    elif artifact.startswith(("http://", "https://")):
        fetch_http(artifact, dest)
    else:
        raise FetchError(
            f"{uri} resolves to {artifact or 'nothing'}, which this initializer cannot download "
            "(supported: mlflow-artifacts:/, s3://, http(s)://)"
        )


def fetch(uri: str, dest: Path) -> None:
    """Fetch `uri` into `dest` (created if needed); FetchError says why it could not."""
    dest.mkdir(parents=True, exist_ok=True)
    if uri.startswith("file://") or uri.startswith("/"):
        copy_path(Path(uri[len("file://") :] if uri.startswith("file://") else uri), dest)
    elif uri.startswith(("http://", "https://")):
        fetch_http(uri, dest)
    elif uri.startswith("s3://"):
        fetch_s3(uri, dest)
    elif uri.startswith("models:/"):
        fetch_mlflow(uri, dest)
    else:
        raise FetchError(f"the scheme of {uri} is not supported")
    if not any(dest.iterdir()):
        raise FetchError(f"{uri} is empty")
    flatten(dest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("uri")
    parser.add_argument("dest")
    parser.add_argument("--termination-log", default="", help="Write why it failed here.")
    args = parser.parse_args(argv)
    print(f"fetching {args.uri} into {args.dest}", flush=True)
    try:
        fetch(args.uri, Path(args.dest))
    except (FetchError, OSError, tarfile.TarError, zipfile.BadZipFile, ValueError) as error:
        message = str(error) if isinstance(error, FetchError) else f"{args.uri}: {error}"
        print(f"error: {message}", file=sys.stderr, flush=True)
        if args.termination_log:
            with contextlib.suppress(OSError):
                Path(args.termination_log).write_text(message + "\n")
        return 1
    count = sum(1 for p in Path(args.dest).rglob("*") if p.is_file())
    print(f"fetched {count} files", flush=True)
    if (
        not (Path(args.dest) / "bundle.yaml").exists()
        and not (Path(args.dest) / "MLmodel").exists()
    ):
        print("warning: no bundle.yaml or MLmodel at the top of the model", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
