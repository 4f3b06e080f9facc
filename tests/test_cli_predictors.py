"""primehub-deploy's list and card with several predictors and autoscaling."""

from __future__ import annotations

from typing import Any

from primehub_jupyter.cli.output import deployment_detail, deployments_table
from primehub_jupyter.core.models import DeploymentRecord


def record() -> dict[str, Any]:
    predictor = {"instanceType": "cpu-0.5", "modelImage": "registry.example.com/iris:1"}
    data = DeploymentRecord.model_validate(
        {
            "id": "iris-ab",
            "spec": {
                "displayName": "Iris A/B",
                "groupName": "default",
                "predictors": [
                    {**predictor, "name": "v1", "traffic": 90, "replicas": 2},
                    {**predictor, "name": "v2", "traffic": 10, "minReplicas": 0, "maxReplicas": 3},
                    {**predictor, "name": "shade", "shadow": True},
                ],
            },
            "status": {
                "phase": "Deployed",
                "availableReplicas": 3,
                "predictors": [
                    {
                        "name": "v1",
                        "traffic": 90,
                        "replicas": 2,
                        "availableReplicas": 2,
                        "phase": "Deployed",
                    },
                    {
                        "name": "v2",
                        "traffic": 10,
                        "replicas": 0,
                        "availableReplicas": 0,
                        "phase": "ScaledToZero",
                    },
                    {
                        "name": "shade",
                        "shadow": True,
                        "replicas": 1,
                        "availableReplicas": 1,
                        "phase": "Deployed",
                    },
                ],
            },
        }
    )
    return data.to_json()


def test_list_and_card_show_each_predictor(capsys):
    deployments_table([record()])
    listing = capsys.readouterr().out
    assert "None" not in listing and "Scaled to zero" in listing
    deployment_detail(record())
    card = capsys.readouterr().out
    assert "Predictor v1" in card and "90%" in card and "shadow" in card
    assert "Replicas (v2)" in card and "Scaled to zero: 0/0 available (autoscaled 0-3)" in card
    assert "None" not in card
