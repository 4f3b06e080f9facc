"""Fake model stores over HTTP: plain files, an S3 API that checks SigV4, an MLflow registry."""

from __future__ import annotations

import hashlib
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path
from xml.sax.saxutils import escape

from aiohttp import web

from primehub_jupyter.engines.kubernetes.fetch import sigv4_headers

S3_ACCESS_KEY = "AKIDEXAMPLE"
S3_SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


class Storage:
    """Routes under /files/, /s3/<bucket>/ and /mlflow/ serving one directory tree."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.s3_requests: list[str] = []
        self.mlflow_models: dict[tuple[str, str], str] = {}  # (name, version) -> artifact path

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/files/{path:.*}", self.file)
        app.router.add_get("/s3/{bucket}/", self.s3_list)
        app.router.add_get("/s3/{bucket}/{key:.+}", self.s3_get)
        app.router.add_put("/s3/{bucket}/{key:.+}", self.s3_put)
        app.router.add_get(
            "/mlflow/api/2.0/mlflow/model-versions/get-download-uri", self.mlflow_uri
        )
        app.router.add_get("/mlflow/api/2.0/mlflow-artifacts/artifacts", self.mlflow_list)
        app.router.add_get("/mlflow/api/2.0/mlflow-artifacts/artifacts/{path:.+}", self.mlflow_get)

    def _path(self, relative: str) -> Path:
        path = (self.root / relative).resolve()
        if self.root.resolve() not in path.parents and path != self.root.resolve():
            raise web.HTTPForbidden()
        return path

    async def file(self, request: web.Request) -> web.StreamResponse:
        path = self._path(request.match_info["path"])
        if not path.is_file():
            raise web.HTTPNotFound(text="no such file")
        return web.FileResponse(path)

    def _check_signature(self, request: web.Request) -> None:
        """Recompute the SigV4 signature the way S3 does; 403 when it differs."""
        auth = request.headers.get("Authorization", "")
        date = request.headers.get("x-amz-date", "")
        if not auth.startswith("AWS4-HMAC-SHA256") or S3_ACCESS_KEY not in auth:
            raise web.HTTPForbidden(text="<Error><Code>AccessDenied</Code></Error>")
        moment = datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        url = f"http://{request.host}{request.raw_path}"
        expected = sigv4_headers(
            request.method,
            url,
            region="us-east-1",
            access_key=S3_ACCESS_KEY,
            secret_key=S3_SECRET_KEY,
            now=moment,
            payload_hash=request.headers.get("x-amz-content-sha256", ""),
        )["authorization"]
        if expected != auth:
            raise web.HTTPForbidden(text="<Error><Code>SignatureDoesNotMatch</Code></Error>")

    async def s3_list(self, request: web.Request) -> web.Response:
        self._check_signature(request)
        self.s3_requests.append(request.raw_path)
        bucket = self._path(request.match_info["bucket"])
        prefix = request.query.get("prefix", "")
        keys = (
            sorted(str(p.relative_to(bucket)) for p in bucket.rglob("*") if p.is_file())
            if bucket.is_dir()
            else []
        )
        keys = [k for k in keys if k.startswith(prefix)]
        contents = "".join(f"<Contents><Key>{escape(k)}</Key></Contents>" for k in keys)
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>{escape(bucket.name)}</Name><Prefix>{escape(prefix)}</Prefix>"
            f"<KeyCount>{len(keys)}</KeyCount><IsTruncated>false</IsTruncated>{contents}"
            "</ListBucketResult>"
        )
        return web.Response(text=xml, content_type="application/xml")

    async def s3_get(self, request: web.Request) -> web.StreamResponse:
        self._check_signature(request)
        key = urllib.parse.unquote(request.match_info["key"])
        path = self._path(f"{request.match_info['bucket']}/{key}")
        if not path.is_file():
            raise web.HTTPNotFound(text="<Error><Code>NoSuchKey</Code></Error>")
        return web.FileResponse(path)

    async def s3_put(self, request: web.Request) -> web.Response:
        """PutObject: the body must hash to the signed x-amz-content-sha256."""
        self._check_signature(request)
        body = await request.read()
        if hashlib.sha256(body).hexdigest() != request.headers.get("x-amz-content-sha256"):
            raise web.HTTPBadRequest(text="<Error><Code>XAmzContentSHA256Mismatch</Code></Error>")
        key = urllib.parse.unquote(request.match_info["key"])
        path = self._path(f"{request.match_info['bucket']}/{key}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        self.s3_requests.append(f"PUT {request.raw_path}")
        return web.Response(status=200)

    async def mlflow_uri(self, request: web.Request) -> web.Response:
        key = (request.query.get("name", ""), request.query.get("version", ""))
        if key not in self.mlflow_models:
            return web.json_response(
                {
                    "error_code": "RESOURCE_DOES_NOT_EXIST",
                    "message": f"model version {key} not found",
                },
                status=404,
            )
        return web.json_response({"artifact_uri": f"mlflow-artifacts:/{self.mlflow_models[key]}"})

    async def mlflow_list(self, request: web.Request) -> web.Response:
        base = self._path(f"mlflow/{request.query.get('path', '')}")
        if not base.is_dir():
            return web.json_response({})
        files = [
            {"path": str(p.relative_to(self._path("mlflow"))), "is_dir": p.is_dir()}
            | ({} if p.is_dir() else {"file_size": p.stat().st_size})
            for p in sorted(base.iterdir())
        ]
        return web.json_response({"files": files})

    async def mlflow_get(self, request: web.Request) -> web.StreamResponse:
        path = self._path(f"mlflow/{urllib.parse.unquote(request.match_info['path'])}")
        if not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)
