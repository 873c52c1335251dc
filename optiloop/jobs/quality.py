"""The data-quality gate: check a frame against the spec's rules, repair what the spec allows,
and stop with a report that names the rule and the columns when it must.

Rules run in a fixed order (rows, target, schema, constant columns, missing values,
duplicates, outliers, classes, class imbalance, rows after cleaning). Imputation itself
happens in the feature transform, fitted on the training split only; this stage decides
whether the gaps are acceptable.

    result = check_quality(frame, spec.dataset, spec.data_quality)
    result.report.passed            # False -> nothing downstream runs
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..api.jobs import DataQualityReport, RuleResult, RuleStatus
from ..api.spec import DataQualitySpec, DatasetSpec
from ..formats.categories import category_key

ALWAYS_FATAL = ("rows", "target", "classes")
"""Rules that stop the run even when ``failOnViolation`` is false: nothing can be trained."""

NUMERIC_PARSE_SHARE = 0.9
"""A text column whose values parse as numbers this often is a numeric column with bad values."""


@dataclass
class QualityResult:
    """The cleaned frame (target included) and the report."""

    frame: pd.DataFrame
    report: DataQualityReport
    categorical: list[str]
    oversample: bool = False


class _Checker:
    def __init__(self, frame: pd.DataFrame, dataset: DatasetSpec, rules: DataQualitySpec) -> None:
        self.frame = frame.copy()
        self.dataset = dataset
        self.spec = rules
        self.results: list[RuleResult] = []
        self.class_weights: dict[str, float] | None = None
        self.oversample = False
        self.categorical: list[str] = []

    # --- bookkeeping ---------------------------------------------------------

    def record(
        self,
        rule: str,
        status: RuleStatus,
        message: str,
        *,
        action: str = "",
        columns: list[str] | None = None,
        counts: dict[str, float] | None = None,
    ) -> None:
        if status == "failed" and not self.spec.fail_on_violation and rule not in ALWAYS_FATAL:
            status = "warning"
            message += " (failOnViolation is false: continuing)"
        self.results.append(
            RuleResult(
                rule=rule, status=status, message=message, action=action, columns=columns or [], counts=counts or {}
            )
        )

    @property
    def failed(self) -> bool:
        return any(r.status == "failed" for r in self.results)

    @property
    def features(self) -> list[str]:
        return [c for c in self.frame.columns if c != self.dataset.target]

    # --- rules ---------------------------------------------------------------

    def rows(self) -> None:
        if len(self.frame) == 0:
            self.record("rows", "failed", "the dataset has no rows", counts={"rows": 0})
        elif self.frame.shape[1] < 2:
            self.record("rows", "failed", "the dataset needs a target and at least one feature column")

    def target(self) -> None:
        target = self.dataset.target
        if target not in self.frame.columns:
            self.record(
                "target",
                "failed",
                f"target column {target!r} is missing; columns are: {', '.join(map(str, self.frame.columns[:20]))}",
                columns=[target],
            )
            return
        missing = int(self.frame[target].isna().sum())
        if missing == len(self.frame):
            self.record("target", "failed", f"target column {target!r} has no values", columns=[target])
            return
        if self.dataset.task == "regression":
            numeric = pd.to_numeric(self.frame[target], errors="coerce")
            bad = int(numeric.isna().sum()) - missing
            if bad:
                self.record(
                    "target", "failed", f"regression target {target!r} has {bad} non-numeric values", columns=[target]
                )
                return
            self.frame[target] = numeric
        if missing:
            self.frame = self.frame[self.frame[target].notna()].reset_index(drop=True)
            self.record(
                "target",
                "fixed",
                f"dropped {missing} rows without a target value",
                action="dropRows",
                columns=[target],
                counts={"rowsDropped": missing},
            )
        else:
            self.record("target", "passed", f"target column {target!r} is present and complete", columns=[target])

    def schema(self) -> None:
        problems: list[str] = []
        bad_columns: list[str] = []
        declared = {c.name: c.type for c in self.spec.schema_.columns}
        for name in [*declared, *self.dataset.categorical_columns]:
            if name not in self.frame.columns:
                problems.append(f"column {name!r} named in the spec does not exist")
                bad_columns.append(name)
        if not self.spec.schema_.allow_extra_columns:
            extra = [c for c in self.features if c not in declared]
            if extra:
                problems.append(f"columns not in schema.columns: {', '.join(map(str, extra[:10]))}")
                bad_columns.extend(map(str, extra))
        for column in self.features:
            kind = declared.get(column)
            if column in self.dataset.categorical_columns or kind == "categorical":
                self.categorical.append(column)
                keys = self.frame[column].map(lambda v: v if pd.isna(v) else category_key(v))
                self.frame[column] = keys.astype("string")
                continue
            values = self.frame[column]
            if kind == "boolean" or pd.api.types.is_bool_dtype(values):
                self.frame[column] = values.astype("float64")
                continue
            if pd.api.types.is_numeric_dtype(values):
                continue
            parsed = pd.to_numeric(values, errors="coerce")
            present = values.notna()
            unparsable = present & parsed.isna()
            share = 1.0 - unparsable.sum() / max(int(present.sum()), 1)
            if kind == "numeric" or share >= NUMERIC_PARSE_SHARE:
                if unparsable.any():
                    example = values[unparsable].iloc[0]
                    problems.append(
                        f"numeric column {column!r} holds {int(unparsable.sum())} non-numeric values (e.g. {example!r})"
                    )
                    bad_columns.append(str(column))
                self.frame[column] = parsed
            else:
                self.categorical.append(column)
                self.frame[column] = values.astype("string")
        if problems:
            self.record("schema", "failed", "; ".join(problems), columns=bad_columns)
        else:
            self.record(
                "schema", "passed", f"{len(self.features)} feature columns, {len(self.categorical)} categorical"
            )

    def constant_columns(self) -> None:
        constant = [c for c in self.features if self.frame[c].nunique(dropna=True) <= 1]
        action = self.spec.constant_columns.action
        if not constant:
            self.record("constantColumns", "passed", "no constant columns")
        elif action == "drop":
            self.frame = self.frame.drop(columns=constant)
            self.categorical = [c for c in self.categorical if c not in constant]
            self.record(
                "constantColumns", "fixed", f"dropped {len(constant)} constant columns", action="drop", columns=constant
            )
        elif action == "fail":
            self.record("constantColumns", "failed", f"{len(constant)} columns hold a single value", columns=constant)
        else:
            self.record(
                "constantColumns",
                "warning",
                f"{len(constant)} columns hold a single value",
                action="ignore",
                columns=constant,
            )

    def missing_values(self) -> None:
        rule = self.spec.missing_values
        fractions = {str(c): float(f) for c, f in self.frame[self.features].isna().mean().items() if f > 0}
        over = [c for c, f in fractions.items() if f > rule.max_fraction]
        if not fractions:
            self.record("missingValues", "passed", "no missing values")
            return
        under = (
            f"{len(fractions) - len(over)} columns under {rule.max_fraction:.0%} missing "
            f"are imputed ({rule.impute_strategy})"
        )
        if not over:
            self.record("missingValues", "fixed", under, action="impute", columns=list(fractions), counts=fractions)
        elif rule.action == "fail":
            self.record(
                "missingValues",
                "failed",
                f"{len(over)} columns exceed {rule.max_fraction:.0%} missing values",
                columns=over,
                counts=fractions,
            )
        elif rule.action == "dropRows":
            before = len(self.frame)
            self.frame = self.frame.dropna(subset=over).reset_index(drop=True)
            self.record(
                "missingValues",
                "fixed",
                f"dropped {before - len(self.frame)} rows missing values in {len(over)} columns; {under}",
                action="dropRows",
                columns=list(fractions),
                counts=fractions,
            )
        else:
            self.record(
                "missingValues",
                "fixed",
                f"{len(over)} columns over {rule.max_fraction:.0%} missing are imputed too; {under}",
                action="impute",
                columns=list(fractions),
                counts=fractions,
            )

    def duplicates(self) -> None:
        rule = self.spec.duplicates
        duplicated = self.frame.duplicated()
        count = int(duplicated.sum())
        fraction = count / max(len(self.frame), 1)
        counts = {"duplicateRows": count, "fraction": fraction}
        if count == 0:
            self.record("duplicates", "passed", "no duplicate rows", counts=counts)
        elif rule.action == "drop":
            self.frame = self.frame[~duplicated].reset_index(drop=True)
            self.record("duplicates", "fixed", f"dropped {count} duplicate rows", action="drop", counts=counts)
        elif fraction <= rule.max_fraction:
            self.record(
                "duplicates",
                "passed",
                f"{count} duplicate rows ({fraction:.1%}) are within the {rule.max_fraction:.0%} tolerated",
                counts=counts,
            )
        elif rule.action == "fail":
            self.record(
                "duplicates",
                "failed",
                f"{count} duplicate rows ({fraction:.1%}) exceed {rule.max_fraction:.0%}",
                counts=counts,
            )
        else:
            self.record(
                "duplicates", "warning", f"{count} duplicate rows ({fraction:.1%}) kept", action="ignore", counts=counts
            )

    def outliers(self) -> None:
        rule = self.spec.outliers
        numeric = [c for c in self.features if c not in self.categorical and self.frame[c].nunique(dropna=True) > 2]
        if not numeric or len(self.frame) < 8:
            self.record("outliers", "passed", "no numeric columns to check")
            return
        values = self.frame[numeric].astype("float64")
        if rule.method == "isolationForest":
            from sklearn.ensemble import IsolationForest

            filled = values.fillna(values.median())
            forest = IsolationForest(contamination=min(rule.threshold / 100.0, 0.5), random_state=self.dataset.seed)
            row_mask = pd.Series(forest.fit_predict(filled.to_numpy()) == -1, index=values.index)
            per_column: dict[str, float] = {}
            low = high = None
        else:
            if rule.method == "iqr":
                q1, q3 = values.quantile(0.25), values.quantile(0.75)
                spread = q3 - q1
                low, high = q1 - rule.threshold * spread, q3 + rule.threshold * spread
            else:
                mean, std = values.mean(), values.std(ddof=0).replace(0, np.nan)
                low, high = mean - rule.threshold * std, mean + rule.threshold * std
            cell_mask = values.lt(low) | values.gt(high)
            row_mask = cell_mask.any(axis=1)
            per_column = {str(c): float(n) for c, n in cell_mask.sum().items() if n}
        rows = int(row_mask.sum())
        fraction = rows / len(self.frame)
        counts = {"rows": rows, "fraction": fraction, **per_column}
        columns = list(per_column)
        if rows == 0:
            self.record("outliers", "passed", f"no outliers ({rule.method})", counts=counts)
            return
        over = fraction > rule.max_fraction
        note = (
            f" ({fraction:.1%} of rows, more than the {rule.max_fraction:.0%} expected)"
            if over
            else f" ({fraction:.1%} of rows)"
        )
        if rule.action == "clip" and low is not None and high is not None:
            self.frame[numeric] = values.clip(lower=low, upper=high, axis=1)
            self.record(
                "outliers",
                "warning" if over else "fixed",
                f"clipped outliers in {rows} rows{note}",
                action="clip",
                columns=columns,
                counts=counts,
            )
        elif rule.action == "drop":
            self.frame = self.frame[~row_mask].reset_index(drop=True)
            self.record(
                "outliers",
                "warning" if over else "fixed",
                f"dropped {rows} outlying rows{note}",
                action="drop",
                columns=columns,
                counts=counts,
            )
        else:
            self.record(
                "outliers",
                "warning" if over else "passed",
                f"{rows} outlying rows flagged{note}",
                action="flag",
                columns=columns,
                counts=counts,
            )

    def classes(self) -> None:
        if self.dataset.task != "classification":
            return
        counts = self.frame[self.dataset.target].astype("string").value_counts()
        if len(counts) < 2:
            only = counts.index[0] if len(counts) else "none"
            self.record(
                "classes",
                "failed",
                f"target {self.dataset.target!r} has a single class ({only}); nothing to learn",
                columns=[self.dataset.target],
            )
            return
        rare = [str(label) for label, n in counts.items() if n < 3]
        if rare:
            self.record(
                "classes",
                "failed",
                f"classes {', '.join(rare)} have fewer than 3 rows: too few to split into train, validation and test",
                columns=[self.dataset.target],
                counts={str(k): float(v) for k, v in counts.items()},
            )
            return
        self.record("classes", "passed", f"{len(counts)} classes", counts={str(k): float(v) for k, v in counts.items()})

    def class_imbalance(self) -> None:
        if self.dataset.task != "classification" or self.failed:
            return
        rule = self.spec.class_imbalance
        counts = self.frame[self.dataset.target].astype("string").value_counts()
        ratio = float(counts.max() / counts.min())
        measured = {"ratio": ratio, **{str(k): float(v) for k, v in counts.items()}}
        if ratio <= rule.max_ratio:
            self.record("classImbalance", "passed", f"largest/smallest class ratio {ratio:.1f}", counts=measured)
        elif rule.action == "fail":
            self.record(
                "classImbalance",
                "failed",
                f"class ratio {ratio:.1f} exceeds {rule.max_ratio:g}",
                columns=[self.dataset.target],
                counts=measured,
            )
        elif rule.action == "reweight":
            total, k = float(counts.sum()), len(counts)
            self.class_weights = {str(label): total / (k * float(n)) for label, n in counts.items()}
            self.record(
                "classImbalance",
                "fixed",
                f"class ratio {ratio:.1f}: the loss is weighted by class",
                action="reweight",
                counts=measured,
            )
        elif rule.action == "oversample":
            self.oversample = True
            self.record(
                "classImbalance",
                "fixed",
                f"class ratio {ratio:.1f}: rare classes are oversampled in the training split",
                action="oversample",
                counts=measured,
            )
        else:
            self.record(
                "classImbalance",
                "warning",
                f"class ratio {ratio:.1f} exceeds {rule.max_ratio:g}",
                action="ignore",
                counts=measured,
            )

    def enough_rows(self) -> None:
        rows = len(self.frame)
        if rows < self.spec.min_rows:
            self.record(
                "rows",
                "failed",
                f"{rows} rows remain after cleaning; at least {self.spec.min_rows} are required (dataQuality.minRows)",
                counts={"rows": rows},
            )
        else:
            self.record(
                "rows",
                "passed",
                f"{rows} rows after cleaning (at least {self.spec.min_rows} required)",
                counts={"rows": rows},
            )


def check_quality(frame: pd.DataFrame, dataset: DatasetSpec, rules: DataQualitySpec) -> QualityResult:
    """Run every rule in order and return the cleaned frame with the report.

    A failed rule that makes later rules meaningless (no rows, no target) stops the checks
    early; otherwise all rules run, so the report lists every problem at once.
    """
    checker = _Checker(frame, dataset, rules)
    rows_before, columns_before = len(frame), [str(c) for c in frame.columns]
    checker.rows()
    if not checker.failed:
        checker.target()
    if not checker.failed:
        for step in (
            checker.schema,
            checker.constant_columns,
            checker.missing_values,
            checker.duplicates,
            checker.outliers,
            checker.classes,
            checker.class_imbalance,
        ):
            step()
        if not any(r.rule == "rows" and r.status == "failed" for r in checker.results):
            checker.enough_rows()
    failed = [r.rule for r in checker.results if r.status == "failed"]
    report = DataQualityReport(
        passed=not failed,
        failed_rules=failed,
        rows_before=rows_before,
        rows_after=len(checker.frame),
        columns_before=columns_before,
        columns_after=[str(c) for c in checker.features],
        rules=checker.results,
        class_weights=checker.class_weights,
    )
    return QualityResult(checker.frame, report, [str(c) for c in checker.categorical], checker.oversample)


def failure_message(report: DataQualityReport) -> str:
    """One line per failed rule, naming its columns, for errors and condition messages."""
    lines = []
    for result in report.rules:
        if result.status == "failed":
            columns = f" [columns: {', '.join(result.columns[:10])}]" if result.columns else ""
            lines.append(f"data-quality rule {result.rule} failed: {result.message}{columns}")
    return "\n".join(lines)
