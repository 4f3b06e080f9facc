"""Comparing a deployment's predictors (canary, A/B, shadow) and promoting one: the report."""

from __future__ import annotations

import math
from typing import Final, Literal

from pydantic import Field

from .errors import ValidationError
from .models import DeploymentRecord, DeploymentSpec, _Observed
from .traffic import LATENCY_BUCKETS, PredictorCounters

ALPHA = 0.05
# Below this many feedback messages on either side the test is not run: a p-value from a
# handful of answers would move with every new one.
MIN_FEEDBACK = 20
# Fisher's exact test replaces the z-test when an expected cell count is below this
# (the usual rule for the normal approximation of a 2x2 table).
MIN_EXPECTED = 5
Z_TEST: Final = "two-sided two-proportion z-test (pooled)"
FISHER: Final = "two-sided Fisher's exact test"
Method = Literal["two-sided two-proportion z-test (pooled)", "two-sided Fisher's exact test"]
TEST_DESCRIPTION = (
    f"Each challenger's success share (feedback with a reward above 0) against the primary's: "
    f"{Z_TEST}, or {FISHER} when an expected count is below {MIN_EXPECTED}; "
    f"significant when p < {ALPHA}; not run below {MIN_FEEDBACK} feedback on either side."
)


class SignificanceTest(_Observed):
    """A challenger's success share against the primary's."""

    baseline: str = Field(description="The primary predictor it is compared with.")
    method: Method
    enough_data: bool = Field(description=f"Both sides have at least {MIN_FEEDBACK} feedback.")
    statistic: float | None = Field(description="z (the z-test only); null otherwise.")
    p_value: float | None = Field(description="Null when there is not enough data.")
    alpha: float = ALPHA
    significant: bool = Field(description="p < alpha (false without enough data).")
    difference: float | None = Field(
        description="Challenger's success share minus the primary's; null without feedback."
    )
    summary: str = Field(description="The result in one sentence, for a person.")


class PredictorComparison(_Observed):
    """One predictor's counts since it started serving, and what follows from them."""

    name: str
    role: Literal["primary", "challenger", "shadow"]
    traffic: int = Field(description="Percent of requests it answers (0 for a shadow).")
    requests: int
    errors: int
    error_rate: float | None = Field(description="errors / requests; null without requests.")
    latency_p50: float | None = Field(description="Seconds, from the histogram (see docs).")
    latency_p99: float | None = Field(description="Seconds, from the histogram (see docs).")
    feedback: int
    mean_reward: float | None
    successes: int
    success_rate: float | None = Field(description="successes / feedback; null without feedback.")
    compared: int = Field(description="Shadow only: answers compared with the primary's.")
    differed: int
    differed_share: float | None = Field(
        description="Shadow only: differed / compared; null otherwise or before any comparison."
    )
    test: SignificanceTest | None = Field(description="Challengers only.")


class ComparisonReport(_Observed):
    """`GET deployments/<id>/compare`: every predictor of the spec, the primary first."""

    deployment_id: str
    primary: str = Field(description="The answering predictor with the most traffic.")
    counted: bool = Field(
        description="Whether the engine reported counters (false: it does not count per "
        "predictor, or has counted nothing yet)."
    )
    test: str = Field(default=TEST_DESCRIPTION, description="Which test, and when it is run.")
    alpha: float = ALPHA
    min_feedback: int = MIN_FEEDBACK
    predictors: list[PredictorComparison]


# ---- statistics -------------------------------------------------------------------------


def normal_two_sided_p(z: float) -> float:
    """P(|Z| >= |z|) for a standard normal Z: erfc(|z| / sqrt 2), exact to double precision."""
    return math.erfc(abs(z) / math.sqrt(2.0))


def z_test(successes_a: int, n_a: int, successes_b: int, n_b: int) -> tuple[float, float]:
    """(z, two-sided p) of the pooled two-proportion z-test; z > 0 when b's share is higher."""
    pooled = (successes_a + successes_b) / (n_a + n_b)
    variance = pooled * (1 - pooled) * (1 / n_a + 1 / n_b)
    if variance == 0:  # both all-success or all-failure: no difference to see
        return 0.0, 1.0
    z = (successes_b / n_b - successes_a / n_a) / math.sqrt(variance)
    return z, normal_two_sided_p(z)


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_exact_p(successes_a: int, n_a: int, successes_b: int, n_b: int) -> float:
    """Two-sided p of Fisher's exact test on the 2x2 table (successes, failures) x (a, b).

    The p-value sums the hypergeometric probabilities of every table with the same margins
    that is no more likely than the observed one (R's fisher.test does the same).
    """
    total = successes_a + successes_b
    n = n_a + n_b
    low, high = max(0, total - n_b), min(total, n_a)

    def log_p(x: int) -> float:
        return _log_choose(n_a, x) + _log_choose(n_b, total - x) - _log_choose(n, total)

    observed = log_p(successes_a)
    # A relative tolerance so tables as likely as the observed one count despite rounding.
    limit = observed + 1e-7
    p = sum(math.exp(log_p(x)) for x in range(low, high + 1) if log_p(x) <= limit)
    return min(1.0, p)


def significance(
    baseline: str, primary: PredictorCounters, challenger: PredictorCounters
) -> SignificanceTest:
    """The test of `challenger`'s success share against `primary`'s."""
    n_a, s_a = primary.feedback, min(primary.successes, primary.feedback)
    n_b, s_b = challenger.feedback, min(challenger.successes, challenger.feedback)
    difference = s_b / n_b - s_a / n_a if n_a and n_b else None
    pooled = (s_a + s_b) / (n_a + n_b) if n_a + n_b else 0.0
    expected = [n * share for n in (n_a, n_b) for share in (pooled, 1 - pooled)]
    method: Method = Z_TEST if min(expected) >= MIN_EXPECTED else FISHER
    if min(n_a, n_b) < MIN_FEEDBACK:
        return SignificanceTest(
            baseline=baseline,
            method=method,
            enough_data=False,
            statistic=None,
            p_value=None,
            significant=False,
            difference=difference,
            summary=f"not enough data: {MIN_FEEDBACK} feedback needed on each side "
            f"({challenger.name} has {n_b}, {baseline} has {n_a})",
        )
    if method == Z_TEST:
        statistic: float | None
        statistic, p_value = z_test(s_a, n_a, s_b, n_b)
    else:
        statistic, p_value = None, fisher_exact_p(s_a, n_a, s_b, n_b)
    significant = p_value < ALPHA
    assert difference is not None
    if significant:
        better = "better" if difference > 0 else "worse"
        summary = (
            f"{challenger.name} succeeds {better} than {baseline} "
            f"({difference * 100:+.1f} points, p = {p_value:.3g} < {ALPHA})"
        )
    else:
        summary = (
            f"no significant difference from {baseline} "
            f"({difference * 100:+.1f} points, p = {p_value:.3g} >= {ALPHA})"
        )
    return SignificanceTest(
        baseline=baseline,
        method=method,
        enough_data=True,
        statistic=statistic,
        p_value=p_value,
        significant=significant,
        difference=difference,
        summary=summary,
    )


def latency_quantile(buckets: list[int], q: float) -> float | None:
    """The q-quantile (seconds) of a latency histogram; None when it is empty.

    As Prometheus' histogram_quantile: the rank q*N falls in one bucket, and latencies are
    taken as spread evenly inside it, so the value is interpolated linearly between the
    bucket's lower and upper bound (the first bucket starts at 0). A rank in the last,
    unbounded bucket gives that bucket's lower bound (the largest finite bound).
    """
    counts = list(buckets[: len(LATENCY_BUCKETS)])
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            lower = LATENCY_BUCKETS[index - 1] if index else 0.0
            upper = LATENCY_BUCKETS[index]
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return LATENCY_BUCKETS[-2]


def _nothing(name: str) -> PredictorCounters:
    """The counters of a predictor the engine has not counted yet: zeros."""
    return PredictorCounters.model_validate({"name": name})


def _share(part: float, whole: int) -> float | None:
    return part / whole if whole else None


def compare_report(
    deployment: DeploymentRecord, counters: list[PredictorCounters]
) -> ComparisonReport:
    """The report of a deployment's current predictors from the engine's counters.

    Counters of predictors no longer in the spec are left out; a predictor the engine has not
    counted yet shows zeros.
    """
    spec = deployment.spec
    primary = spec.predictor.name
    weights = spec.weights()
    by_name = {c.name: c for c in counters}
    order = sorted(spec.predictors, key=lambda p: (p.name != primary, p.shadow))
    rows = []
    for predictor in order:
        c = by_name.get(predictor.name) or _nothing(predictor.name)
        role: Literal["primary", "challenger", "shadow"] = (
            "shadow"
            if predictor.shadow
            else "primary"
            if predictor.name == primary
            else "challenger"
        )
        rows.append(
            PredictorComparison(
                name=predictor.name,
                role=role,
                traffic=weights.get(predictor.name, 0),
                requests=c.requests,
                errors=c.errors,
                error_rate=_share(c.errors, c.requests),
                latency_p50=latency_quantile(c.latency_buckets, 0.5),
                latency_p99=latency_quantile(c.latency_buckets, 0.99),
                feedback=c.feedback,
                mean_reward=_share(c.reward_sum, c.feedback),
                successes=c.successes,
                success_rate=_share(c.successes, c.feedback),
                compared=c.compared,
                differed=c.differed,
                differed_share=_share(c.differed, c.compared) if predictor.shadow else None,
                test=(
                    significance(primary, by_name.get(primary) or _nothing(primary), c)
                    if role == "challenger"
                    else None
                ),
            )
        )
    return ComparisonReport(
        deployment_id=deployment.id, primary=primary, counted=bool(counters), predictors=rows
    )


# ---- promote ----------------------------------------------------------------------------


def promoted_spec(spec: DeploymentSpec, name: str, message: str | None) -> DeploymentSpec:
    """`spec` with predictor `name` answering every request and every other predictor gone."""
    found = next((p for p in spec.predictors if p.name == name), None)
    names = ", ".join(p.name for p in spec.predictors if not p.shadow)
    if found is None:
        raise ValidationError(
            f"predictor: deployment has no predictor '{name}' (predictors: {names})",
            details=[{"field": "predictor", "message": f"not one of {names}"}],
        )
    if found.shadow:
        raise ValidationError(
            f"predictor: '{name}' is a shadow; promote an answering predictor ({names}), "
            "or give the shadow traffic by an update first",
            details=[{"field": "predictor", "message": "a shadow cannot be promoted"}],
        )
    return spec.model_copy(
        update={
            "predictors": [found.model_copy(update={"traffic": 100})],
            "update_message": message or f"promote {name}",
        }
    )
