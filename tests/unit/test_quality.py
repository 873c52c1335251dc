"""Each data-quality rule passes clean data, catches its defect, names the column, and stops the run when told to."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from optiloop.api.spec import DataQualitySpec, DatasetSpec
from optiloop.jobs.quality import check_quality, failure_message


def clean_frame(rows: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {"a": rng.normal(size=rows), "b": rng.uniform(0, 10, size=rows), "c": rng.integers(0, 5, size=rows)}
    )
    frame["target"] = (frame["a"] + rng.normal(scale=0.5, size=rows) > 0).astype(int)
    return frame


def run(frame: pd.DataFrame, rules: dict[str, Any] | None = None, **dataset: Any) -> Any:
    spec = DatasetSpec.model_validate({"uri": "builtin://iris", **dataset})
    return check_quality(frame, spec, DataQualitySpec.model_validate(rules or {}))


def result_of(outcome: Any, rule: str) -> Any:
    return next(r for r in outcome.report.rules if r.rule == rule)


def test_clean_data_passes_every_rule() -> None:
    outcome = run(clean_frame())
    assert outcome.report.passed
    assert {r.status for r in outcome.report.rules} <= {"passed"}
    assert outcome.report.rows_after == 200


@pytest.mark.parametrize(
    ("fraction", "action", "status", "rows"),
    [
        (0.05, "fail", "fixed", 200),
        (0.3, "fail", "failed", 200),
        (0.3, "dropRows", "fixed", 140),
        (0.3, "impute", "fixed", 200),
    ],
)
def test_missing_values(fraction: float, action: str, status: str, rows: int) -> None:
    frame = clean_frame()
    frame.loc[: int(200 * fraction) - 1, "b"] = np.nan
    outcome = run(frame, {"missingValues": {"maxFraction": 0.2, "action": action}})
    result = result_of(outcome, "missingValues")
    assert result.status == status
    assert result.columns == ["b"]
    assert result.counts["b"] == pytest.approx(fraction)
    if status != "failed":
        assert outcome.report.rows_after == rows


@pytest.mark.parametrize(
    ("action", "status", "rows"), [("drop", "fixed", 180), ("fail", "failed", 200), ("ignore", "warning", 200)]
)
def test_duplicates_over_the_threshold(action: str, status: str, rows: int) -> None:
    frame = clean_frame()
    frame.iloc[:20] = frame.iloc[20:40].to_numpy()
    outcome = run(frame, {"duplicates": {"maxFraction": 0.05, "action": action}})
    assert result_of(outcome, "duplicates").status == status
    assert result_of(outcome, "duplicates").counts["duplicateRows"] == 20
    if status != "failed":
        assert outcome.report.rows_after == rows


def test_duplicates_within_tolerance_fail_action_passes() -> None:
    frame = clean_frame()
    frame.iloc[:2] = frame.iloc[2:4].to_numpy()
    assert (
        result_of(run(frame, {"duplicates": {"maxFraction": 0.05, "action": "fail"}}), "duplicates").status == "passed"
    )


@pytest.mark.parametrize(("action", "status"), [("drop", "fixed"), ("fail", "failed"), ("ignore", "warning")])
def test_constant_columns(action: str, status: str) -> None:
    frame = clean_frame()
    frame["same"] = 7.0
    outcome = run(frame, {"constantColumns": {"action": action}})
    result = result_of(outcome, "constantColumns")
    assert (result.status, result.columns) == (status, ["same"])
    assert ("same" in outcome.report.columns_after) == (action != "drop")


def test_numeric_column_holding_strings_fails_naming_it() -> None:
    frame = clean_frame()
    frame["b"] = frame["b"].astype(object)
    frame.loc[3, "b"] = "n/a-ish"
    outcome = run(frame)
    result = result_of(outcome, "schema")
    assert result.status == "failed"
    assert result.columns == ["b"]
    assert "'n/a-ish'" in result.message
    assert not outcome.report.passed


def test_text_column_becomes_categorical() -> None:
    frame = clean_frame()
    frame["city"] = np.where(frame["a"] > 0, "oslo", "lima")
    outcome = run(frame)
    assert outcome.report.passed
    assert outcome.categorical == ["city"]


@pytest.mark.parametrize(
    ("rules", "dataset", "column"),
    [
        ({"schema": {"columns": [{"name": "missing_col"}]}}, {}, "missing_col"),
        ({}, {"categoricalColumns": ["ghost"]}, "ghost"),
        ({"schema": {"columns": [{"name": "a"}, {"name": "b"}], "allowExtraColumns": False}}, {}, "c"),
    ],
)
def test_schema_names_unknown_and_unexpected_columns(
    rules: dict[str, Any], dataset: dict[str, Any], column: str
) -> None:
    result = result_of(run(clean_frame(), rules, **dataset), "schema")
    assert result.status == "failed"
    assert column in result.columns


def test_missing_target_stops_at_once_naming_the_column() -> None:
    outcome = run(clean_frame().drop(columns=["target"]))
    assert not outcome.report.passed
    assert outcome.report.failed_rules == ["target"]
    assert "target column 'target' is missing" in failure_message(outcome.report)


def test_rows_without_target_are_dropped() -> None:
    frame = clean_frame()
    frame["target"] = frame["target"].astype(float)
    frame.loc[:9, "target"] = np.nan
    outcome = run(frame)
    assert result_of(outcome, "target").status == "fixed"
    assert outcome.report.rows_after == 190


@pytest.mark.parametrize(
    ("method", "threshold", "action"),
    [("iqr", 3.0, "clip"), ("zscore", 4.0, "drop"), ("isolationForest", 2.0, "flag"), ("isolationForest", 2.0, "drop")],
)
def test_outliers_are_found_and_treated(method: str, threshold: float, action: str) -> None:
    frame = clean_frame()
    frame.loc[5, "a"] = 1e6
    outcome = run(frame, {"outliers": {"method": method, "threshold": threshold, "action": action, "maxFraction": 0.1}})
    result = result_of(outcome, "outliers")
    assert result.counts["rows"] >= 1
    if action == "clip":
        assert outcome.frame["a"].max() < 1e3
        assert result.columns == ["a"]
    elif action == "drop":
        assert 1e6 not in outcome.frame["a"].to_numpy()
    else:
        assert result.status in ("passed", "warning")
        assert 1e6 in outcome.frame["a"].to_numpy()


def test_single_class_always_stops_even_without_fail_on_violation() -> None:
    frame = clean_frame()
    frame["target"] = 1
    outcome = run(frame, {"failOnViolation": False})
    assert outcome.report.failed_rules == ["classes"]


@pytest.mark.parametrize(
    ("action", "status"), [("fail", "failed"), ("reweight", "fixed"), ("oversample", "fixed"), ("ignore", "warning")]
)
def test_class_imbalance(action: str, status: str) -> None:
    frame = clean_frame(400)
    frame["target"] = 0
    frame.loc[:19, "target"] = 1
    outcome = run(frame, {"classImbalance": {"maxRatio": 5, "action": action}})
    assert result_of(outcome, "classImbalance").status == status
    assert result_of(outcome, "classImbalance").counts["ratio"] == pytest.approx(19.0)
    if action == "reweight":
        weights = outcome.report.class_weights
        assert weights["1"] == pytest.approx(400 / (2 * 20))
        assert weights["0"] == pytest.approx(400 / (2 * 380))
    assert outcome.oversample == (action == "oversample")


def test_too_few_rows_stop_the_run() -> None:
    outcome = run(clean_frame(30), {"minRows": 50})
    assert outcome.report.failed_rules == ["rows"]
    assert "dataQuality.minRows" in failure_message(outcome.report)


def test_empty_frame_stops_at_once() -> None:
    outcome = run(pd.DataFrame({"a": [], "target": []}))
    assert outcome.report.failed_rules == ["rows"]


def test_fail_on_violation_false_turns_failures_into_warnings() -> None:
    frame = clean_frame()
    frame["same"] = 1.0
    outcome = run(frame, {"constantColumns": {"action": "fail"}, "failOnViolation": False})
    assert outcome.report.passed
    assert result_of(outcome, "constantColumns").status == "warning"


def test_report_lists_every_problem_at_once() -> None:
    frame = clean_frame()
    frame["same"] = 1.0
    frame.iloc[:30] = frame.iloc[30:60].to_numpy()
    outcome = run(frame, {"constantColumns": {"action": "fail"}, "duplicates": {"action": "fail"}})
    assert set(outcome.report.failed_rules) == {"constantColumns", "duplicates"}
