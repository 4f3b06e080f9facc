"""The chart definitions (core/charts.py): pure functions over a metrics document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from primehub_jupyter.core import charts

STEP = 15.0
T0 = 1_795_420_800.0  # a multiple of the step, as the engine's buckets are


def document(points: int = 60, first: int = 52, spike: int | None = 57) -> dict[str, Any]:
    """A 15-minute window whose deployment exists from bucket `first` on (null before)."""
    times = [T0 + i * STEP for i in range(points)]

    def live(value: float | None) -> list[float | None]:
        return [None if i < first else value for i in range(points)]

    latency = live(0.002)
    if spike is not None:
        latency[spike] = 0.48
    return {
        "deploymentId": "iris-x7k2p",
        "window": points * STEP,
        "step": STEP,
        "timestamps": times,
        "series": {
            "requestsPerSecond": live(2.0),
            "predictRequestsPerSecond": live(1.9),
            "successRate": live(0.9),
            "clientErrorsPerSecond": live(0.15),
            "serverErrorsPerSecond": live(0.05),
            "latencyP50": live(0.002),
            "latencyP90": live(0.003),
            "latencyP99": latency,
            "reward": live(0.75),
        },
        "replicas": {
            "iris-x7k2p-1-0": {"requestsPerSecond": live(1.0), "latencyP99": live(0.003),
                               "cpu": live(0.2), "memory": live(120 * 2**20)},
            "iris-x7k2p-1-1": {"requestsPerSecond": live(1.0), "latencyP99": live(0.003),
                               "cpu": live(0.3), "memory": live(130 * 2**20)},
        },
        "totals": {"requests": 240, "predictRequests": 228, "clientErrors": 18,
                   "serverErrors": 6, "feedback": 4, "reward": 0.75},
    }  # fmt: skip


def by_id(specs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["usermeta"]["chartId"]: s for s in specs}


@pytest.fixture(scope="module")
def validator() -> Any:
    """The Vega-Lite v5 JSON schema, as altair (test extra) ships it."""
    altair = pytest.importorskip("altair")
    jsonschema = pytest.importorskip("jsonschema")
    path = Path(altair.__file__).parent / "vegalite" / "v5" / "schema" / "vega-lite-schema.json"
    schema = json.loads(path.read_text())
    return jsonschema.Draft7Validator(schema)


def test_short_spans_label_seconds_long_ones_minutes() -> None:
    short = by_id(charts.chart_specs(document(first=52)))["requests"]  # 2 minutes
    assert short["encoding"]["x"]["axis"]["format"] == "%H:%M:%S"
    long = by_id(charts.chart_specs(document(first=0)))["requests"]  # 15 minutes
    assert long["encoding"]["x"]["axis"]["format"] == "%H:%M"


def test_time_axis_starts_at_the_first_data_point_not_the_window_start() -> None:
    doc = document(first=52)
    specs = charts.chart_specs(doc)
    assert [s["usermeta"]["chartId"] for s in specs] == list(charts.CHART_IDS)
    expected = [doc["timestamps"][52] * 1000, doc["timestamps"][-1] * 1000]
    for spec in specs:
        assert spec["encoding"]["x"]["scale"]["domain"] == expected, spec["usermeta"]
        # and no row before it is drawn
        assert min(r["time"] for r in spec["data"]["values"]) == expected[0]


def test_a_later_first_point_in_one_series_moves_the_axis_of_every_chart_to_the_earliest() -> None:
    doc = document(first=40)
    doc["series"]["reward"] = [None] * 50 + [0.5] * 10
    domains = {tuple(s["encoding"]["x"]["scale"]["domain"]) for s in charts.chart_specs(doc)}
    assert domains == {(doc["timestamps"][40] * 1000, doc["timestamps"][-1] * 1000)}


def test_a_single_bucket_of_data_gets_a_one_step_axis() -> None:
    doc = document(first=59, spike=None)
    domain = charts.time_domain(doc)
    assert domain == (doc["timestamps"][59] * 1000, (doc["timestamps"][59] + STEP) * 1000)


def test_no_data_at_all_says_so_over_the_whole_window() -> None:
    doc = document(first=60, spike=None)
    assert charts.time_domain(doc) is None
    window = [doc["timestamps"][0] * 1000, doc["timestamps"][-1] * 1000]
    for spec in charts.chart_specs(doc):
        assert spec["encoding"]["x"]["scale"]["domain"] == window
        assert spec["title"]["subtitle"] == "no data yet"
        assert spec["data"]["values"] == []
        # fixed y domains: an empty chart still has a size (Vega draws it without NaN or inf)
        assert spec["encoding"]["y"]["scale"]["domain"] in ([0, 1], [1, 1000])


def test_latency_is_on_a_log_scale_in_ms_and_keeps_the_spike_and_the_steady_line() -> None:
    spec = by_id(charts.chart_specs(document()))["latency"]
    assert spec["encoding"]["y"]["scale"]["type"] == "log"
    p99 = [r["value"] for r in spec["data"]["values"] if r["series"] == "p99"]
    assert max(v for v in p99 if v is not None) == pytest.approx(480.0)
    assert min(v for v in p99 if v is not None) == pytest.approx(2.0)


def test_latency_zero_becomes_a_gap_not_a_log_of_zero() -> None:
    doc = document()
    doc["series"]["latencyP50"][55] = 0.0
    spec = by_id(charts.chart_specs(doc))["latency"]
    p50 = [r for r in spec["data"]["values"] if r["series"] == "p50"]
    assert doc["timestamps"][55] * 1000 not in {r["time"] for r in p50}
    # The line breaks there: the points before and after are separate segments (lines).
    assert spec["encoding"]["detail"]["field"] == "segment"
    before = {r["segment"] for r in p50 if r["time"] < doc["timestamps"][55] * 1000}
    after = {r["segment"] for r in p50 if r["time"] > doc["timestamps"][55] * 1000}
    assert len(before) == len(after) == 1 and before != after


def test_every_series_is_present_with_a_colour_and_legend_outside_the_plot() -> None:
    specs = by_id(charts.chart_specs(document()))
    expected = {
        "requests": {"2xx", "4xx", "5xx"},
        "success": {"success"},
        "latency": {"p50", "p90", "p99"},
        "reward": {"reward"},
        "cpu": {"iris-x7k2p-1-0", "iris-x7k2p-1-1"},
        "memory": {"iris-x7k2p-1-0", "iris-x7k2p-1-1"},
    }
    for chart_id, names in expected.items():
        spec = specs[chart_id]
        drawn = {r["series"] for r in spec["data"]["values"] if r["value"] is not None}
        assert drawn == names, chart_id
        color = spec["encoding"]["color"]
        assert set(color["scale"]["domain"]) == names
        assert len(color["scale"]["range"]) == len(names)
        assert color["legend"]["orient"] in ("bottom", "top", "right", "left")
        assert set(spec["usermeta"]["colorRoles"]) == names
        assert spec["encoding"]["tooltip"], chart_id


def test_requests_by_outcome_split_the_total() -> None:
    spec = by_id(charts.chart_specs(document()))["requests"]
    at = document()["timestamps"][56] * 1000
    values = {r["series"]: r["value"] for r in spec["data"]["values"] if r["time"] == at}
    assert values == pytest.approx({"2xx": 1.8, "4xx": 0.15, "5xx": 0.05})


def test_memory_is_in_mib_and_cpu_in_cores() -> None:
    specs = by_id(charts.chart_specs(document()))
    memory = {r["value"] for r in specs["memory"]["data"]["values"] if r["value"] is not None}
    assert memory == {120.0, 130.0}
    cpu = {r["value"] for r in specs["cpu"]["data"]["values"] if r["value"] is not None}
    assert cpu == {0.2, 0.3}


def test_nan_and_garbage_values_are_gaps() -> None:
    doc = document()
    doc["series"]["reward"][58] = float("nan")
    doc["series"]["reward"][59] = "x"
    spec = by_id(charts.chart_specs(doc))["reward"]
    times = {r["time"] for r in spec["data"]["values"]}
    assert doc["timestamps"][57] * 1000 in times
    assert not times & {doc["timestamps"][58] * 1000, doc["timestamps"][59] * 1000}
    json.dumps(spec, allow_nan=False)  # what the REST API and the kernel send must be JSON


def test_no_replica_yet_means_no_empty_legend() -> None:
    doc = document(first=60, spike=None)
    doc["replicas"] = {}
    specs = by_id(charts.chart_specs(doc))
    for chart_id in ("cpu", "memory"):
        color = specs[chart_id]["encoding"]["color"]
        # An empty domain/legend made Vega draw the chart at an infinite height in chromium.
        assert color["legend"] is None and "scale" not in color


@pytest.mark.parametrize("first", [0, 52, 59, 60])
def test_specs_and_dashboard_validate_against_the_vega_lite_v5_schema(
    validator: Any, first: int
) -> None:
    doc = document(first=first)
    if first == 60:
        doc["replicas"] = {}
    for spec in [*charts.chart_specs(doc), charts.dashboard(doc)]:
        errors = sorted(validator.iter_errors(spec), key=lambda e: list(e.path))
        assert not errors, [f"{list(e.path)}: {e.message[:200]}" for e in errors[:3]]


def test_the_bundle_has_the_vegalite_mimetype_and_a_readable_summary() -> None:
    bundle = charts.bundle(document())
    assert set(bundle) == {"application/vnd.vegalite.v5+json", "text/plain"}
    assert bundle["text/plain"] == (
        "iris-x7k2p, last 900 s: 240 requests (228 predictions), 18 4xx, 6 5xx, "
        "4 feedback, reward 0.75"
    )
    assert len(bundle["application/vnd.vegalite.v5+json"]["concat"]) == len(charts.CHART_IDS)
