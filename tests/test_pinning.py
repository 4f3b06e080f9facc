"""Requirement pinning finds the distribution behind an import name as the standard library does."""

from __future__ import annotations

from importlib import metadata

import pytest

from primehub_jupyter.serving.runtimes.common import distribution_of, pin

# Import names whose distribution has another name, or none of its own top_level.txt.
NAMES = ("sklearn", "numpy", "scipy", "joblib", "yaml", "xgboost", "lightgbm", "torch", "onnx")


@pytest.mark.parametrize("name", NAMES)
def test_distribution_of_matches_packages_distributions(name: str) -> None:
    expected = metadata.packages_distributions().get(name)
    if not expected:
        pytest.skip(f"{name} is not installed")
    assert distribution_of(name) == expected[0]


def test_pin_names_the_distribution_and_its_version() -> None:
    assert pin("sklearn", "os", "no_such_module_here") == [
        f"scikit-learn=={metadata.version('scikit-learn')}"
    ]
