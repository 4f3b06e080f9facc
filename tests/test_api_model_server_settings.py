"""Deployment metadata tunes the model server: batching and the request log, end to end."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import requests

from .conftest import spec, wait_until


async def test_request_log_and_batching_from_metadata(api, bundles, tmp_path: Path):
    metadata = {"primehub.io/request-log": "true", "primehub.io/max-batch-size": "16",
                "primehub.io/max-batch-wait-ms": "2"}  # fmt: skip
    created = await api.ok("POST", "deployments", {"spec": spec(bundles["v1"], metadata=metadata)})
    deployed = await api.wait_phase(created["id"], "Deployed")
    endpoint = deployed["status"]["endpoint"]
    headers = {"Request-ID": "logged-request-1"}
    row = {"data": {"ndarray": [[5.1, 3.5, 1.4, 0.2]]}}
    response = await asyncio.to_thread(
        requests.post, endpoint, json=row, headers=headers, timeout=30
    )
    assert response.status_code == 200 and response.headers["Request-ID"] == "logged-request-1"
    feedback = endpoint.replace("/predictions", "/feedback")
    answer = await asyncio.to_thread(
        requests.post, feedback, json={"request": row, "reward": 1.0}, headers=headers, timeout=30
    )
    assert answer.status_code == 200

    root = tmp_path / "primehub-data" / "request-logs" / created["id"]

    def records() -> list[dict]:
        found = []
        for path in root.rglob("*.jsonl"):
            found += [json.loads(line) for line in path.read_text().splitlines() if line]
        return found

    logged = await wait_until(
        lambda: [r for r in records() if "logged-request-1" in json.dumps(r)] or None,
        what="the request log",
    )
    assert any(r.get("request") == row for r in logged)
    replica_log = await api.ok("GET", f"deployments/{created['id']}/logs", tail="all")
    assert "adaptive batching: up to 16 rows, waiting at most 2 ms" in replica_log


async def test_bad_model_server_metadata_is_refused(api, bundles):
    bad = {"primehub.io/max-batch-size": "lots"}
    code, body = await api.call("POST", "deployments", {"spec": spec(bundles["v1"], metadata=bad)})
    assert code == 422 and "primehub.io/max-batch-size" in body["message"]
