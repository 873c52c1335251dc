"""The drift monitor from the main environment: it runs in its own environment (pydantic 1 and
Alibi Detect, see README, Licensing), so the main one finds that interpreter and runs
``python -m optiloop.drift check`` there.

Used by ``optiloop drift check`` and by the local run's drift baseline. Only the standard
library is imported here, so the command also works where the main extras are missing.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import DriftEnvironmentMissingError, RunError

if TYPE_CHECKING:
    import pandas as pd

    from ..api.spec import MonitoringSpec

DRIFT_PYTHON_ENV = "OPTILOOP_DRIFT_PYTHON"
CHECK_TIMEOUT_SECONDS = 900


def drift_python() -> Path | None:
    """The drift environment's interpreter: ``$OPTILOOP_DRIFT_PYTHON``, ``./.venv-drift``, or the checkout's."""
    candidates = [os.environ.get(DRIFT_PYTHON_ENV, ""), ".venv-drift/bin/python"]
    candidates.append(str(Path(__file__).resolve().parents[2] / ".venv-drift" / "bin" / "python"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def check_command(
    reference: Path, data: Sequence[Path], detectors: Sequence[str], p_value: float, correction: str
) -> list[str]:
    """The drift environment's ``check`` command line (raises :class:`DriftEnvironmentMissingError`)."""
    python = drift_python()
    if python is None:
        raise DriftEnvironmentMissingError(
            "the drift environment is missing: run `make install`, or point OPTILOOP_DRIFT_PYTHON at the python of an "
            "environment installed from requirements/drift.lock (see README, Licensing)"
        )
    command = [str(python), "-m", "optiloop.drift", "check", "--reference", str(reference), "--data", *map(str, data)]
    for detector in detectors:
        command += ["--detector", detector]
    return [*command, "--p-value", str(p_value), "--correction", correction]


def run_check(reference: Path, data: Sequence[Path], detectors: Sequence[str], p_value: float, correction: str) -> int:
    """Run the check with its output on this terminal; its exit code (0 no drift, 1 drift)."""
    return subprocess.run(check_command(reference, data, detectors, p_value, correction), check=False).returncode


def drift_baseline(monitoring: MonitoringSpec, model_dir: Path, holdout: pd.DataFrame, work: Path) -> dict[str, Any]:
    """The drift monitor's check of ``holdout`` against the reference, in the drift environment."""
    path = work / "holdout.csv"
    holdout.to_csv(path, index=False)
    command = check_command(model_dir, [path], [monitoring.detector], monitoring.p_value, monitoring.correction)
    result = subprocess.run(command, capture_output=True, text=True, timeout=CHECK_TIMEOUT_SECONDS)
    if result.returncode not in (0, 1):
        raise RunError(f"the drift check failed: {result.stderr.strip()[-500:]}")
    return dict(json.loads(result.stdout)[str(path)][monitoring.detector])
