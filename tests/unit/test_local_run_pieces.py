"""The pure pieces of ``optiloop run``: ``--set`` overrides, the progress views, and the SVG charts."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from optiloop.api.jobs import TrialRecord
from optiloop.local import svg
from optiloop.local.manifest import apply_override
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
