"""The detectors' statistics: few false alarms without a shift, and a half-SD shift in one of ten
features found in nearly every 500-row window (seeded synthetic data and bundled data)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("detection_rates.py")


@pytest.fixture(scope="module")
def rates(drift_python: Path) -> dict[str, float]:
    result = subprocess.run([str(drift_python), str(SCRIPT)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_false_positive_rate_stays_near_the_p_value(rates: dict[str, float]) -> None:
    # 300 windows (60 references) at p = 0.05, Bonferroni over 10 features: at most 5% expected.
    assert rates["false_positive_rate"] <= 0.08
    assert rates["false_positive_rate_breast_cancer"] <= 0.08


def test_a_half_sd_shift_in_one_feature_is_found_in_90_percent_of_windows(rates: dict[str, float]) -> None:
    assert rates["power_0_5_sd"] >= 0.9
    assert rates["power_0_25_sd"] > rates["false_positive_rate"]  # weaker, still above chance
