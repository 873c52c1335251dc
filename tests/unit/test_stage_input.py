"""The stage input is read from a file or the environment, and an Indexed Job pod takes its own worker index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optiloop.jobs.errors import StorageError
from optiloop.jobs.stage import read_stage_input

INPUT = {
    "name": "iris",
    "artifacts": "pvc://artifacts/iris",
    "revision": 2,
    "workerCount": 3,
    "spec": {"dataset": {"uri": "builtin://iris"}, "deployment": {"storageUri": "pvc://artifacts/iris"}},
}


def test_input_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    path = tmp_path / "input.json"
    path.write_text(json.dumps(INPUT))
    stage = read_stage_input(path)
    assert (stage.name, stage.revision, stage.worker_index, stage.worker_count) == ("iris", 2, 0, 3)


def test_input_from_the_environment_with_the_completion_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTILOOP_STAGE_INPUT", json.dumps(INPUT))
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")
    assert read_stage_input(None).worker_index == 2


def test_completion_index_beyond_the_worker_count_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTILOOP_STAGE_INPUT", json.dumps(INPUT))
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "3")
    with pytest.raises(StorageError, match="workerCount=3"):
        read_stage_input(None)


def test_missing_input_says_how_to_give_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPTILOOP_STAGE_INPUT", raising=False)
    with pytest.raises(StorageError, match="--input FILE or set OPTILOOP_STAGE_INPUT"):
        read_stage_input(None)
