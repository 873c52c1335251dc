"""The pieces of ``optiloop run``: ``--set`` overrides, local dataset files, the progress views, and the SVG charts."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from optiloop.api import ManifestError, manifest_errors
from optiloop.api.jobs import TrialRecord
from optiloop.jobs.data import load_dataset
from optiloop.local import svg
from optiloop.local.manifest import apply_override, load_run_manifest
from optiloop.local.progress import JsonView, LiveView, LogView, View, choose_view


@pytest.mark.parametrize(
    ("assignment", "path", "value"),
    [
        ("spec.tuning.maxTrials=8", ("spec", "tuning", "maxTrials"), 8),
        ("spec.tuning.search.epochs={min: 5, max: 9}", ("spec", "tuning", "search", "epochs"), {"min": 5, "max": 9}),
        ("spec.compression.steps[0].prune.amount=0.3", ("spec", "compression", "steps", 0, "prune", "amount"), 0.3),
        ("spec.dataset.uri=builtin://wine", ("spec", "dataset", "uri"), "builtin://wine"),
        ("spec.monitoring.enabled=false", ("spec", "monitoring", "enabled"), False),
    ],
)
def test_overrides_set_nested_fields(assignment: str, path: tuple[Any, ...], value: Any) -> None:
    document: dict[str, Any] = {"spec": {"compression": {"steps": [{"prune": {"amount": 0.5, "scope": "layer"}}]}}}
    apply_override(document, assignment)
    node: Any = document
    for part in path:
        node = node[part]
    assert node == value
    assert document["spec"]["compression"]["steps"][0]["prune"]["scope"] == "layer"  # siblings untouched


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("spec.tuning", "expected PATH=VALUE"),
        ("=3", "expected PATH=VALUE"),
        ("spec.compression.steps[5].prune.amount=1", "index 5 is out of range"),
        ("spec.compression.steps[x]=1", "'x' is not a list index"),
        ("spec.tuning.maxTrials=[unclosed", "not valid YAML"),
    ],
)
def test_bad_overrides_say_what_is_wrong(assignment: str, message: str) -> None:
    document: dict[str, Any] = {"spec": {"compression": {"steps": [{}]}}}
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        apply_override(document, assignment)


def record(number: int, value: float) -> TrialRecord:
    return TrialRecord(number=number, state="COMPLETE", values=[value])


def test_log_view_writes_one_line_per_event() -> None:
    stream = io.StringIO()
    view = LogView(stream)
    view.stage_started("tuning", "tpe")
    view.epoch(0, 1, 0.5)  # epochs are only shown live
    view.trial(record(0, 0.91), 0.91)
    view.stage_finished("tuning", "best trial 0", resumed=True)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].endswith("tuning: started (tpe)")
    assert lines[1].endswith("trial 0 complete: 0.91 (best 0.91)")
    assert lines[2].endswith("tuning: reused from a previous run: best trial 0")


def test_live_view_updates_a_status_line_in_place() -> None:
    stream = io.StringIO()
    view = LiveView(stream)
    view.stage_started("tuning")
    view.epoch(3, 7, 0.8)
    assert "\r\x1b[2K  tuning: trial 3, epoch 7, validation 0.8; best so far -" in stream.getvalue()
    view.close()
    assert stream.getvalue().endswith("\r\x1b[2K")


def test_json_view_emits_parseable_events() -> None:
    stream = io.StringIO()
    view = JsonView(stream)
    view.stage_started("features")
    view.trial(record(2, 0.5), 0.7)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["stageStarted", "trial"]
    assert events[1]["trial"]["number"] == 2
    assert events[1]["best"] == 0.7


def test_view_choice_follows_the_flags_and_the_terminal() -> None:
    assert type(choose_view(quiet=True, as_json=False)) is View
    assert isinstance(choose_view(quiet=False, as_json=True), JsonView)
    assert type(choose_view(quiet=False, as_json=False, stream=io.StringIO())) is LogView


def test_charts_are_well_formed_svg_and_escape_labels() -> None:
    charts = [
        svg.scatter(
            [svg.Point(1, 2, label="<b>&"), svg.Point(2, 3)],
            "x",
            "y",
            "t",
            line=[(1, 2), (2, 3)],
            vertical=[(1.5, "gate")],
            horizontal=[(2.5, "limit")],
        ),
        svg.bars([("a", 0.5), ("b", 0.25)], "bars", "value", reference=0.4),
        svg.heatmap([[5, 1], [0, 7]], ["x", "y"], "confusion"),
        svg.empty("nothing"),
        svg.scatter([], "x", "y", "empty"),
    ]
    for chart in charts:
        root = ET.fromstring(chart)
        assert root.tag.endswith("svg")
    assert "&lt;b&gt;&amp;" in charts[0]


def _manifest(folder: Path, uri: str) -> Path:
    document = {
        "apiVersion": "optiloop.dev/v1alpha1",
        "kind": "ModelOptimization",
        "metadata": {"name": "mine"},
        "spec": {"dataset": {"uri": uri}, "deployment": {"storageUri": "pvc://artifacts/mine"}},
    }
    path = folder / "mine.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize("written", ["data/train.csv", "./data/train.csv", "file://data/train.csv", "ABSOLUTE"])
def test_a_local_run_reads_a_csv_named_relative_to_the_manifest_or_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: str
) -> None:
    """`optiloop run` on one's own CSV: a plain path or file:// URI, relative to the manifest's
    folder (not the working directory) unless absolute, is read from there."""
    (tmp_path / "data").mkdir()
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "target": ["a", "b", "a"]})
    frame.to_csv(tmp_path / "data" / "train.csv", index=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    uri = f"file://{tmp_path / 'data' / 'train.csv'}" if written == "ABSOLUTE" else written
    model = load_run_manifest(_manifest(tmp_path, uri), [])
    assert model.spec.dataset.uri == f"file://{tmp_path / 'data' / 'train.csv'}"
    pd.testing.assert_frame_equal(load_dataset(model.spec.dataset), frame)


def test_a_missing_local_file_names_the_field_and_where_it_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as raised:
        load_run_manifest(_manifest(tmp_path, "data/nothing.csv"), [])
    assert str(raised.value) == (
        f"{tmp_path / 'mine.yaml'}: spec.dataset.uri: 'data/nothing.csv': no such file "
        f"{tmp_path / 'data' / 'nothing.csv'} (relative to the manifest's folder {tmp_path})"
    )


def test_a_local_file_is_for_optiloop_run_only(tmp_path: Path) -> None:
    """The same manifest a cluster would get (optiloop validate, the operator) is refused, saying
    what to use there."""
    (tmp_path / "train.csv").write_text("x,target\n1,a\n")
    document = yaml.safe_load(_manifest(tmp_path, f"file://{tmp_path / 'train.csv'}").read_text())
    [error] = manifest_errors(document)
    assert str(error) == (
        "spec.dataset.uri: file:// names a file on your own machine and works only with `optiloop run`; "
        "in a cluster use pvc://<claim>/<path> or s3://<bucket>/<key>"
    )
    assert manifest_errors(document, local_run=True) == []


def test_a_zero_width_search_is_refused_naming_the_field(tmp_path: Path) -> None:
    document = yaml.safe_load(_manifest(tmp_path, "builtin://iris").read_text())
    document["spec"]["model"] = {"search": {"width": {"min": 0, "max": 64}}}
    [error] = manifest_errors(document)
    assert str(error) == "spec.model.search.width.min: must be at least 1: a hidden layer needs at least one unit"


@pytest.mark.parametrize(
    ("architecture", "expected"),
    [
        ({"family": "mlp", "hidden": [64, 32]}, "mlp, hidden [64, 32]"),
        ({"family": "linear", "hidden": []}, "linear"),
        ({"family": "lightgbm", "hidden": [], "trees": 300, "leaves": 15}, "lightgbm trees, 15 leaves each"),
    ],
)
def test_a_runs_output_names_the_chosen_family(architecture: dict[str, object], expected: str) -> None:
    """The tuning line says which family won (a linear model printed as "hidden []" before)."""
    from optiloop.api.jobs import Architecture

    assert Architecture.model_validate({"inputs": 4, "outputs": 2, **architecture}).summary() == expected
