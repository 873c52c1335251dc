"""``optiloop run`` end to end: both bundled example manifests finish with their artifacts,
summary and report; an interrupted run resumes; bad inputs get the right exit code and a
message naming the problem; the report renders in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optiloop.jobs.storage import LocalStore, is_complete
from tests.conftest import skip_or_fail
from tests.support.manifests import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"
QUICK = ["--set", "spec.tuning.maxTrials=3", "--set", "spec.tuning.search.epochs={min: 10, max: 20}"]


def optiloop(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "optiloop.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OPTILOOP_THREADS": "2", **(env or {})},
    )


@pytest.fixture(scope="module")
def classification(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("bc") / "run"
    return out, optiloop("run", str(EXAMPLES / "breast-cancer.yaml"), "--out", str(out), *QUICK)


def test_classification_example_runs_every_stage(classification: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, result = classification
    assert result.returncode in (0, 4), result.stderr
    store = LocalStore(out)
    for stage in ("data", "features", "tuning", "compression", "model", "run/smoke", "run/drift"):
        assert is_complete(store, f"r1/{stage}"), stage
    summary = result.stdout
    assert "data quality  passed: 569 of 569 rows kept" in summary
    assert "tuning        best trial" in summary
    assert "  * " in summary  # the winner is marked in the candidates table
    assert "smoke test    predictor answered 16 rows like ONNX Runtime" in summary
    assert "drift         baseline on the held-out split:" in summary
    assert f"report        {out / 'r1' / 'report.html'}" in summary
    assert "Traceback" not in result.stderr
    assert "tuning: done: best trial" in result.stderr  # plain progress lines when not on a terminal


def test_regression_example_with_two_objectives(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = optiloop(
        "run",
        str(EXAMPLES / "diabetes-retraining.yaml"),
        "--out",
        str(out),
        "--json",
        *QUICK[:1],
        "spec.tuning.maxTrials=4",
    )
    assert result.returncode in (0, 4), result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["stage"] for e in events if e["event"] == "stageFinished"] == [
        "data quality",
        "features",
        "tuning",
        "compression",
        "smoke test",
        "drift baseline",
    ]
    assert sum(e["event"] == "trial" for e in events) == 4
    summary = events[-1]
    assert summary["event"] == "summary"
    assert any("rmse" in line for line in summary["lines"])
    html = Path(summary["report"]).read_text()
    assert "Pareto front" in html
    assert "Residuals of the chosen model" in html
    assert (out / "r1" / "model" / "model.onnx").is_file()


def test_an_interrupted_run_resumes_and_fresh_starts_over(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "optiloop.cli",
        "run",
        str(EXAMPLES / "breast-cancer.yaml"),
        "--out",
        str(out),
        "--json",
    ]
    args += ["--set", "spec.tuning.maxTrials=6", "--set", "spec.tuning.search.epochs={min: 10, max: 20}"]
    process = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OPTILOOP_THREADS": "2"},
        # A shell running the suite in the background starts it with SIGINT ignored, and children
        # inherit that; the user at a terminal gets the default disposition, which is what is tested.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stdout is not None
    trials_seen = 0
    deadline = time.monotonic() + 300
    for line in process.stdout:
        if json.loads(line)["event"] == "trial":
            trials_seen += 1
            if trials_seen == 2:
                process.send_signal(signal.SIGINT)
                break
        assert time.monotonic() < deadline
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted; finished stages are kept" in stderr
    store = LocalStore(out)
    assert is_complete(store, "r1/features")
    assert not is_complete(store, "r1/tuning")

    resumed = optiloop("run", str(EXAMPLES / "breast-cancer.yaml"), "--out", str(out), "--json", *args[-4:])
    assert resumed.returncode in (0, 4), resumed.stderr
    events = [json.loads(line) for line in resumed.stdout.splitlines()]
    finished = {e["stage"]: e["resumed"] for e in events if e["event"] == "stageFinished"}
    assert finished["data quality"] is True
    assert finished["tuning"] is False
    new_trials = sum(e["event"] == "trial" for e in events)
    assert 1 <= new_trials <= 4  # the study continued instead of starting over
    assert len(json.loads((out / "r1" / "tuning" / "trials.json").read_text())) >= 6

    fresh = optiloop("run", str(EXAMPLES / "breast-cancer.yaml"), "--out", str(out), "--json", "--fresh", *QUICK)
    assert fresh.returncode in (0, 4), fresh.stderr
    events = [json.loads(line) for line in fresh.stdout.splitlines()]
    assert not any(e["resumed"] for e in events if e["event"] == "stageFinished")
    assert len(json.loads((out / "r1" / "tuning" / "trials.json").read_text())) == 3


def test_an_invalid_manifest_names_the_field(tmp_path: Path) -> None:
    result = optiloop("run", str(EXAMPLES / "minimal.yaml"), "--out", str(tmp_path), "--set", "spec.tuning.maxTrials=0")
    assert result.returncode == 2
    assert "spec.tuning.maxTrials:" in result.stderr
    assert "Traceback" not in result.stderr
    result = optiloop("run", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "nope.yaml: file not found" in result.stderr
    result = optiloop("run", str(EXAMPLES / "minimal.yaml"), "--set", "spec.tuning")
    assert result.returncode == 2
    assert "expected PATH=VALUE" in result.stderr


def test_a_missing_data_file_is_named(tmp_path: Path) -> None:
    result = optiloop(
        "run",
        str(EXAMPLES / "minimal.yaml"),
        "--out",
        str(tmp_path / "run"),
        "--set",
        "spec.dataset.uri=pvc://data/missing.csv",
        env={"OPTILOOP_PVC_ROOT": str(tmp_path / "pvc")},
    )
    assert result.returncode == 1
    assert "missing.csv" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_data_quality_failure_exits_3_and_marks_nothing_done(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = optiloop(
        "run", str(EXAMPLES / "minimal.yaml"), "--out", str(out), "--set", "spec.dataQuality.minRows=100000"
    )
    assert result.returncode == 3, result.stderr
    assert "the data-quality gate failed" in result.stderr
    assert "rows" in result.stderr
    assert (out / "r1" / "data" / "report.json").is_file()  # the findings are kept for reading ...
    assert not is_complete(LocalStore(out), "r1/data")  # ... but not taken as a finished stage


def test_the_report_renders_in_headless_chromium(
    classification: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    from PIL import Image, ImageStat

    browser = shutil.which("chromium")
    if browser is None:
        skip_or_fail("chromium is not installed (make install installs Debian's chromium package)")
    out, _result = classification
    report = out / "r1" / "report.html"
    html = report.read_text()
    assert html.count("<svg") >= 5
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing to fetch
    screenshot = tmp_path / "report.png"
    run = subprocess.run(
        [
            browser,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1100,2400",
            f"--screenshot={screenshot}",
            "--enable-logging=stderr",
            "--v=0",
            report.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert screenshot.is_file(), run.stderr[-2000:]
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    image = Image.open(screenshot).convert("L")
    assert ImageStat.Stat(image).stddev[0] > 20  # text and charts, not a blank page
    colours = Image.open(screenshot).convert("RGB").getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50


def test_drift_check_command_uses_the_drift_environment(
    classification: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, _ = classification
    holdout = out / "r1" / "run" / "holdout.csv"
    result = optiloop(
        "drift", "check", "--reference", str(out / "r1" / "model"), "--data", str(holdout), "--detector", "ks"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[str(holdout)]["ks"]["isDrift"] is False
