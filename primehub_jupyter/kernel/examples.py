"""A deployment's "Run an example": the bundle's sample request as curl, never an invented one."""

from __future__ import annotations

import json
import shlex
from typing import Any

#: Said instead of an example when the engine knows no sample request for the model.
NO_SAMPLE = (
    "this model records no sample request (packaged without one, or served from an image): "
    "replace <request body> with rows the model takes"
)
#: Where a private endpoint's client goes (the Clients tab / `clients add` give one).
CLIENT_PLACEHOLDER = "<client-name>:<client-token>"
#: Where a bearer token of the identity provider goes (a private endpoint takes either).
BEARER_PLACEHOLDER = "<access-token>"
#: The bearer header, in double quotes so `$TOKEN` typed in its place expands (as format.ts).
BEARER_HEADER = f'-H "Authorization: Bearer {BEARER_PLACEHOLDER}"'
#: The line between the Basic example and the bearer one.
BEARER_NOTE = "# or with a bearer token from your identity provider (OpenID Connect):"


def example_body(deployment: dict[str, Any]) -> str | None:
    """The request body of the example: the bundle's sample request (`status.sampleRequest`)
    as JSON, or None when the engine knows none."""
    sample = (deployment.get("status") or {}).get("sampleRequest")
    return json.dumps(sample) if sample else None


def curl_example(deployment: dict[str, Any]) -> str:
    """A ready-to-paste curl command calling the deployment with its sample request.

    Private endpoints get a client placeholder, then the same call with a bearer token
    placeholder; without a sample the command has a `<request body>` placeholder and a
    comment line says why.
    """
    status = deployment.get("status") or {}
    spec = deployment.get("spec") or {}
    private = (spec.get("endpoint") or {}).get("accessType") == "private"
    body = example_body(deployment)
    url = shlex.quote(status.get("endpoint") or "<endpoint>")
    data = f"  -d {shlex.quote(body) if body is not None else repr('<request body>')}"
    lines = [
        "curl -X POST" + (f" -u '{CLIENT_PLACEHOLDER}'" if private else "") + f" {url} \\",
        "  -H 'Content-Type: application/json' \\",
        data,
    ]
    if body is None:
        lines.insert(0, f"# {NO_SAMPLE}")
    if private:
        lines += [
            "",
            BEARER_NOTE,
            f"curl -X POST {BEARER_HEADER} {url} \\",
            "  -H 'Content-Type: application/json' \\",
            data,
        ]
    return "\n".join(lines)
