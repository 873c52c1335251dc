"""The drift monitor as a service: it takes KServe's logged requests, finds drift in a shifted
window and not in an unshifted one, refuses malformed events with a reason, exports metrics that
promtool accepts and Prometheus scrapes, and rebuilds itself from the model directory on restart."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import pytest

from optiloop.api import ModelOptimization
from optiloop.drift.metrics import default_query
from optiloop.operator.builders.serving import drift_monitor_url
from tests.conftest import skip_or_fail
from tests.drift.conftest import MonitorProcess, start_monitor, stop, tabular_frame
from tests.support.control_plane import wait_for
from tests.support.prometheus import prometheus_bin, running_prometheus

FEATURES = [f"x{i}" for i in range(10)] + ["colour"]
LABELS = {"namespace": "team-a", "model": "shapes", "revision": "3"}
BINARY = {
    "ce-specversion": "1.0",
    "ce-id": "1",
    "ce-source": "http://shapes-predictor/",
    "ce-type": "org.kubeflow.serving.inference.request",
    "content-type": "application/json",
}


def rows(frame: pd.DataFrame) -> list[list[Any]]:
    return frame[FEATURES].astype(object).values.tolist()


def send(monitor: MonitorProcess, frame: pd.DataFrame, batch: int = 50, structured: bool = False) -> None:
    for start in range(0, len(frame), batch):
        body = {"instances": rows(frame.iloc[start : start + batch])}
        if structured:
            event = {"specversion": "1.0", "id": str(start), "source": "s", "type": BINARY["ce-type"], "data": body}
            status, answer = monitor.post("/", event, {"content-type": "application/cloudevents+json"})
        else:
            status, answer = monitor.post("/", body, BINARY)
        assert status == 200, answer


def evaluations(monitor: MonitorProcess) -> float:
    return monitor.sample("optiloop_drift_evaluations_total", **LABELS) or 0.0


def test_no_drift_then_drift_across_windows(monitor: MonitorProcess) -> None:
    send(monitor, tabular_frame(200, 11), structured=True)
    wait_for(lambda: evaluations(monitor) >= 1, timeout=30, what="the first evaluation")
    assert monitor.sample("optiloop_drift_detected", **LABELS) == 0
    assert monitor.sample("optiloop_drift_window_samples", **LABELS) == 200

    before = evaluations(monitor)
    send(monitor, tabular_frame(200, 12, shift=1.0))
    wait_for(lambda: monitor.sample("optiloop_drift_detected", **LABELS) == 1, timeout=30, what="drift to be detected")
    assert evaluations(monitor) > before
    # One scrape holds one evaluation's metrics: evaluations go on while windows fill.
    scrape = monitor.metrics()
    p_value = monitor.sample("optiloop_drift_p_value", scrape, **LABELS)
    threshold = monitor.sample("optiloop_drift_threshold", scrape, **LABELS)
    assert p_value is not None
    assert threshold is not None
    assert p_value < threshold
    assert threshold == pytest.approx(0.05 / 11)  # Bonferroni over 11 features
    x3 = monitor.sample("optiloop_drift_feature_p_value", scrape, **LABELS, feature="x3")
    assert x3 is not None
    assert x3 == pytest.approx(p_value, rel=1e-9)
    assert (monitor.sample("optiloop_drift_rows_total", **LABELS) or 0) >= 400
    assert (monitor.sample("optiloop_drift_last_evaluation_timestamp_seconds", **LABELS) or 0) > time.time() - 60


@pytest.mark.parametrize(
    ("body", "headers", "reason"),
    [
        (b"{not json", BINARY, "not JSON"),
        (b'{"instances": [[1, 2]]}', BINARY, "row 0: 2 values, the model takes 11"),
        (b'{"instances": [[' + b'"a", ' * 10 + b'"red"]]}', BINARY, "feature 'x0': expected a number"),
        (b'{"inputs": [{"name": "x0", "shape": [1], "data": [1]}]}', BINARY, "missing inputs 'x1'"),
        (b'{"data": 1}', {"content-type": "application/cloudevents+json"}, "attribute specversion is missing"),
        (b'{"instances": [[1, 2]]}', {"content-type": "application/json"}, "header ce-specversion is missing"),
    ],
)
def test_malformed_events_are_refused_and_counted(
    monitor: MonitorProcess, body: bytes, headers: dict[str, str], reason: str
) -> None:
    rejected = monitor.sample("optiloop_drift_events_total", **LABELS, outcome="rejected") or 0
    status, answer = monitor.post("/", body, headers)
    assert status == 400
    assert reason in answer["error"]
    assert monitor.sample("optiloop_drift_events_total", **LABELS, outcome="rejected") == rejected + 1
    assert "optiloop_drift_p_value" in monitor.metrics()  # still serving


def test_logged_responses_are_ignored(monitor: MonitorProcess) -> None:
    status, answer = monitor.post(
        "/", {"predictions": [1]}, {**BINARY, "ce-type": "org.kubeflow.serving.inference.response"}
    )
    assert status == 200
    assert answer["accepted"] == 0


def test_each_revisions_logger_url_from_the_operator_feeds_only_that_revisions_window(
    drift_python: Path, drift_model_dir: Path, tmp_path: Path
) -> None:
    """The URL the operator gives revision N's payload logger reaches the monitor of revision N (3
    here) and fills its window; a canary's logger (revision 4) posts to the same Service and is
    answered but kept out of the window; a path that names no revision is not an endpoint."""
    resource = ModelOptimization.model_validate(
        {
            "metadata": {"name": "shapes", "namespace": "team-a"},
            "spec": {"dataset": {"uri": "builtin://iris"}, "deployment": {"storageUri": "pvc://models/shapes"}},
        }
    )
    process, monitor = start_monitor(drift_python, drift_model_dir, tmp_path / "m.log", "--window-size", "100")
    try:
        served, canary = (urlsplit(drift_monitor_url(resource, n)).path for n in (3, 4))
        status, answer = monitor.post(served, {"instances": rows(tabular_frame(7, 41))}, BINARY)
        assert (status, answer["accepted"]) == (200, 7)
        status, answer = monitor.post(canary, {"instances": rows(tabular_frame(5, 42))}, BINARY)
        assert (status, answer["accepted"]) == (200, 0)
        assert "revision 4" in answer["ignored"]
        assert monitor.sample("optiloop_drift_window_samples", **LABELS) == 7
        assert monitor.sample("optiloop_drift_events_total", **LABELS, outcome="accepted") == 1
        assert monitor.sample("optiloop_drift_events_total", **LABELS, outcome="ignored") == 1
        request = urllib.request.Request(monitor.url + "/revisions/latest", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 404
    finally:
        stop(process)


def test_check_endpoint_compares_a_batch_at_once(monitor: MonitorProcess) -> None:
    status, same = monitor.post("/check", {"instances": rows(tabular_frame(500, 21))})
    assert status == 200
    assert same["isDrift"] is False
    assert same["samples"] == 500
    status, shifted = monitor.post("/check", {"instances": rows(tabular_frame(500, 22, shift=0.5))})
    assert shifted["isDrift"] is True
    assert min(shifted["featurePValues"], key=shifted["featurePValues"].get) == "x3"
    status, _answer = monitor.post("/check", {"instances": [[1]]})
    assert status == 400


def test_promtool_accepts_the_metrics(monitor: MonitorProcess) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        skip_or_fail("promtool is not installed (make install installs Debian's prometheus package)")
    result = subprocess.run([promtool, "check", "metrics"], input=monitor.metrics(), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_the_drift_metrics(drift_python: Path, drift_model_dir: Path, tmp_path: Path) -> None:
    if prometheus_bin() is None:
        skip_or_fail("prometheus is not installed (make install installs Debian's prometheus package)")
    process, monitor = start_monitor(drift_python, drift_model_dir, tmp_path / "m.log", "--window-size", "100")
    try:
        with running_prometheus([f"127.0.0.1:{monitor.port}"]) as prometheus:
            query = default_query("team-a", "shapes", 3)
            send(monitor, tabular_frame(100, 31, shift=1.5))
            result = wait_for(
                lambda: [r for r in prometheus.query(query) if r["value"][1] == "1"],
                timeout=30,
                what="Prometheus to report drift",
            )
            assert result[0]["metric"] == LABELS
            offenders = prometheus.query('topk(1, optiloop_drift_feature_p_value{model="shapes"} * -1)')
            assert offenders[0]["metric"]["feature"] == "x3"
    finally:
        stop(process)


def test_a_restarted_monitor_reloads_its_reference_and_refills_its_window(
    drift_python: Path, drift_model_dir: Path, tmp_path: Path
) -> None:
    process, first = start_monitor(drift_python, drift_model_dir, tmp_path / "1.log", "--window-size", "100")
    send(first, tabular_frame(60, 41))
    assert first.sample("optiloop_drift_window_samples", **LABELS) == 60
    process.kill()
    process.wait()
    process, second = start_monitor(drift_python, drift_model_dir, tmp_path / "2.log", "--window-size", "100")
    try:
        assert second.sample("optiloop_drift_window_samples", **LABELS) == 0
        _status, answer = second.post("/check", {"instances": rows(tabular_frame(300, 42, shift=1.0))})
        assert answer["isDrift"] is True
    finally:
        stop(process)


def test_an_unfinished_model_directory_is_refused(drift_python: Path, drift_model_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(drift_model_dir, copy)
    (copy / "_COMPLETE.json").unlink()
    result = subprocess.run(
        [str(drift_python), "-m", "optiloop.drift", "serve", "--model-dir", str(copy), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "no _COMPLETE.json; the export did not finish" in result.stderr


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("reference", "reference.json: content differs from what the export wrote (SHA-256 mismatch)"),
        ("link", "reference.json: a symbolic link; a model directory holds plain files only"),
    ],
)
def test_a_damaged_model_directory_is_refused_with_the_shared_reader(
    drift_python: Path, drift_model_dir: Path, tmp_path: Path, damage: str, message: str
) -> None:
    copy = tmp_path / "model"
    shutil.copytree(drift_model_dir, copy)
    reference = copy / "reference.json"
    if damage == "reference":
        reference.write_text(reference.read_text().replace("red", "blue", 1))
    else:
        outside = tmp_path / "elsewhere.json"
        reference.rename(outside)
        reference.symlink_to(outside)
    result = subprocess.run(
        [str(drift_python), "-m", "optiloop.drift", "serve", "--model-dir", str(copy), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert message in result.stderr


def test_a_temporary_file_left_by_a_killed_export_does_not_stop_the_monitor(
    drift_python: Path, drift_model_dir: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "model"
    shutil.copytree(drift_model_dir, copy)
    (copy / ".reference.json.tmp-4242-0badc0de").write_text('{"columns": [')
    command = [str(drift_python), "-m", "optiloop.drift", "check", "--reference", str(copy)]
    result = subprocess.run(
        [*command, "--data", str(tmp_path / "x.csv")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    # The reference loads (the stray file is skipped); only the missing data file is reported.
    assert result.returncode == 2
    assert "x.csv" in result.stderr
    assert "temporary file" in result.stderr


def test_check_command_with_every_detector(drift_python: Path, drift_model_dir: Path, tmp_path: Path) -> None:
    same, shifted = tmp_path / "same.csv", tmp_path / "shifted.csv"
    tabular_frame(300, 51)[FEATURES].to_csv(same, index=False)
    tabular_frame(300, 52, shift=1.0)[FEATURES].to_csv(shifted, index=False)
    command = [str(drift_python), "-m", "optiloop.drift", "check", "--reference", str(drift_model_dir)]
    command += ["--data", str(same), str(shifted)]
    for detector in ("tabular", "ks", "cvm", "mmd"):
        command += ["--detector", detector]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr
    results = json.loads(result.stdout)
    for detector in ("tabular", "ks", "cvm", "mmd"):
        assert results[str(same)][detector]["isDrift"] is False, detector
        assert results[str(shifted)][detector]["isDrift"] is True, detector
        if detector != "mmd":
            p_values = results[str(shifted)][detector]["featurePValues"]
            assert min(p_values, key=p_values.get) == "x3", detector


def test_tabular_with_fdr_reports_a_threshold_with_or_without_drift(
    drift_python: Path, drift_model_dir: Path, tmp_path: Path
) -> None:
    # Alibi answers FDR without drift with every cut-off; the check once crashed on that array.
    same, shifted = tmp_path / "same.csv", tmp_path / "shifted.csv"
    tabular_frame(300, 53)[FEATURES].to_csv(same, index=False)
    tabular_frame(300, 54, shift=1.0)[FEATURES].to_csv(shifted, index=False)
    command = [str(drift_python), "-m", "optiloop.drift", "check", "--reference", str(drift_model_dir)]
    command += ["--data", str(same), str(shifted), "--detector", "tabular", "--correction", "fdr"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr
    results = json.loads(result.stdout)
    quiet, drifted = results[str(same)]["tabular"], results[str(shifted)]["tabular"]
    assert quiet["isDrift"] is False
    assert quiet["threshold"] == pytest.approx(0.05 / len(FEATURES))
    assert drifted["isDrift"] is True
    assert drifted["pValue"] <= drifted["threshold"] <= 0.05


def test_check_command_refuses_rows_that_do_not_fit(drift_python: Path, drift_model_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    tabular_frame(10, 1)[FEATURES[:5]].to_csv(bad, index=False)
    command = [
        str(drift_python),
        "-m",
        "optiloop.drift",
        "check",
        "--reference",
        str(drift_model_dir),
        "--data",
        str(bad),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "bad.csv: missing columns x5, x6, x7, x8, x9" in result.stderr
