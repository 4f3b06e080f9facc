"""Each deployment's sample request ("Run an example"), read from its model server's catalog.

The bundle lives in the cluster (a volume, an object store, an image), never on the Jupyter
server: the model server that loaded it publishes the sample as the example of its Seldon
predictions route in `/api/model/info`. It is asked once per model (URI or image), once the
deployment is Deployed (then the pods serve that model).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from ...core.models import DeploymentRecord, Phase

#: The model server's catalog (serving/catalog.py, CATALOG_PATHS).
CATALOG_PATH = "api/model/info"
PREDICT_ROUTE = "/api/v1.0/predictions"
#: A model server that could not say is asked again after this long.
RETRY_SECONDS = 30.0
#: One question never holds a read of the deployments longer than this.
TIMEOUT_SECONDS = 5.0


def sample_of(document: Any) -> dict[str, Any] | None:
    """The sample request in an OpenAPI document of the model server, if it has one."""
    try:
        operation = document["paths"][PREDICT_ROUTE]["post"]
        example = operation["requestBody"]["content"]["application/json"]["example"]
    except (KeyError, TypeError):
        return None
    return example if isinstance(example, dict) and example else None


def _model_of(record: DeploymentRecord) -> str:
    """What decides the sample: the predictors' models (a replica change keeps it)."""
    return "|".join(f"{p.model_uri or ''} {p.model_image or ''}" for p in record.spec.predictors)


class SampleRequests:
    """The sample request of each deployment's current model, cached per model."""

    def __init__(
        self,
        service_url: Callable[[DeploymentRecord], str],
        session: Callable[[], aiohttp.ClientSession],
    ) -> None:
        self._service_url = service_url
        self._session = session
        # id -> (its model, the sample or None, when a missing answer may be asked again)
        self._known: dict[str, tuple[str, dict[str, Any] | None, float]] = {}

    def known(self, record: DeploymentRecord) -> dict[str, Any] | None:
        """The sample already known for the record's model, without asking anyone."""
        known = self._known.get(record.id)
        return known[1] if known is not None and known[0] == _model_of(record) else None

    async def fill(self, records: list[DeploymentRecord]) -> None:
        """Set `status.sample_request` of each record whose model server can say it."""
        await asyncio.gather(*(self._fill_one(r) for r in records))

    async def _fill_one(self, record: DeploymentRecord) -> None:
        known = self._known.get(record.id)
        now = time.monotonic()
        model = _model_of(record)
        if known is not None and known[0] == model:
            if known[1] is not None or now < known[2] or record.status.phase != Phase.DEPLOYED:
                record.status.sample_request = known[1]
                return
        elif record.status.phase != Phase.DEPLOYED:
            return  # no pod serves this generation's model yet
        sample = await self._ask(record)
        self._known[record.id] = (model, sample, now + RETRY_SECONDS)
        record.status.sample_request = sample

    async def _ask(self, record: DeploymentRecord) -> dict[str, Any] | None:
        # The primary predictor's model server: its sample is the deployment's example.
        url = f"{self._service_url(record)}/{CATALOG_PATH}"
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            async with self._session().get(url, timeout=timeout) as response:
                if response.status == 200:
                    return sample_of(await response.json(content_type=None))
        return None

    def forget(self, deployment_id: str) -> None:
        """The deployment is gone."""
        self._known.pop(deployment_id, None)
