"""What a local run produced: one record the runner fills stage by stage, read by the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..api.jobs import CompressionReport, DataQualityReport, FeatureTransform, TuningResult


@dataclass
class RunOutcome:
    """Everything a local run produced, for the summary and the report."""

    name: str
    revision: int
    root: Path
    data: DataQualityReport | None = None
    transform: FeatureTransform | None = None
    tuning: TuningResult | None = None
    trials: list[dict[str, Any]] = field(default_factory=list)
    compression: CompressionReport | None = None
    smoke: dict[str, Any] | None = None
    drift: dict[str, Any] | None = None
    drift_note: str = ""
    evaluation: dict[str, Any] | None = None
    report_path: Path | None = None

    @property
    def model_dir(self) -> Path:
        return self.root / f"r{self.revision}" / "model"
