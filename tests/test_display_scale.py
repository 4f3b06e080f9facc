"""Card, panel and list words for autoscaled predictors: ranges, Scaled to zero, Waking up."""

from __future__ import annotations

from primehub_jupyter.kernel.deployment import Deployment
from primehub_jupyter.kernel.display import predictor_replicas, ready_text, replica_range

FIXED = {"name": "v1", "replicas": 2, "instanceType": "cpu-1", "modelURI": "m"}
SCALED = {
    "name": "v2",
    "minReplicas": 0,
    "maxReplicas": 4,
    "instanceType": "cpu-1",
    "modelURI": "m",
}


def test_replica_range() -> None:
    assert replica_range(FIXED) == "2"
    assert replica_range(SCALED) == "0-4"
    assert replica_range({"maxReplicas": 3}) == "1-3"  # minReplicas defaults to 1


def test_one_fixed_predictor_reads_as_before_from_the_deployment_status() -> None:
    spec = {"predictors": [FIXED]}
    assert predictor_replicas(spec, {"availableReplicas": 1}) == [("Replicas", "1/2 available")]
    assert ready_text(spec, {"availableReplicas": 1}) == "1/2"


def test_scaled_to_zero_and_waking_up_per_predictor() -> None:
    spec = {"predictors": [FIXED, SCALED]}
    at_zero = {
        "availableReplicas": 2,
        "predictors": [
            {"name": "v1", "replicas": 2, "availableReplicas": 2, "phase": "Deployed"},
            {"name": "v2", "replicas": 0, "availableReplicas": 0, "phase": "ScaledToZero"},
        ],
    }
    assert predictor_replicas(spec, at_zero) == [
        ("Replicas (v1)", "2/2 available"),
        ("Replicas (v2)", "Scaled to zero: 0/0 available (autoscaled 0-4)"),
    ]
    assert ready_text(spec, at_zero) == "2/2 Scaled to zero"
    waking = {**at_zero, "predictors": [at_zero["predictors"][0], {
        "name": "v2", "replicas": 1, "availableReplicas": 0, "phase": "WakingUp"}]}  # fmt: skip
    assert predictor_replicas(spec, waking)[1] == (
        "Replicas (v2)",
        "Waking up: 0/1 available (autoscaled 0-4)",
    )
    assert ready_text(spec, waking) == "2/3 Waking up"


def test_the_card_shows_the_words() -> None:
    data = {
        "id": "iris-abcde",
        "spec": {
            "displayName": "iris",
            "groupName": "default",
            "endpoint": {"accessType": "public"},
            "predictors": [{**SCALED, "name": "predictor1"}],
        },
        "status": {
            "phase": "Deployed",
            "message": "predictor1 scaled to zero",
            "predictors": [
                {"name": "predictor1", "replicas": 0, "availableReplicas": 0,
                 "phase": "ScaledToZero"}
            ],
        },
    }  # fmt: skip
    card = Deployment(data, None)._repr_html_()  # type: ignore[arg-type]
    assert "Scaled to zero: 0/0 available (autoscaled 0-4) (cpu-1)" in card
