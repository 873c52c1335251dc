"""What every stage entry point shares: where its input comes from, how its outputs are written,
how many threads it may use, and the exit codes the operator reads.

A stage Job gets its :class:`StageInput` as JSON from ``--input FILE`` or from
``$OPTILOOP_STAGE_INPUT``; an Indexed Job's pods also learn their worker index from
``$JOB_COMPLETION_INDEX``. An invalid input exits 2 after telling the operator why (the
termination message, see :mod:`.outcome`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from ..api.jobs import STAGE_INPUT_ENV, StageInput
from ..errors import OptiloopError
from .errors import StorageError
from .outcome import failed_outcome, report_outcome

THREADS_ENV = "OPTILOOP_THREADS"
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"

EXIT_OK, EXIT_FAILURE, EXIT_INVALID, EXIT_DATA_QUALITY = 0, 1, 2, 3


def dump(model: Any) -> bytes:
    """A stage output (an API model) as the JSON the operator and the next stage read."""
    return json.dumps(model.model_dump(mode="json", by_alias=True), indent=2).encode()


def read_stage_input(path: Path | None) -> StageInput:
    """The stage input from ``path`` or from the ``OPTILOOP_STAGE_INPUT`` environment variable."""
    if path is not None:
        try:
            text = path.read_text()
        except OSError as exc:
            raise StorageError(f"cannot read the stage input {path}: {exc}") from None
    elif os.environ.get(STAGE_INPUT_ENV):
        text = os.environ[STAGE_INPUT_ENV]
    else:
        raise StorageError(f"no stage input: pass --input FILE or set {STAGE_INPUT_ENV}")
    stage = StageInput.model_validate_json(text)
    # Every pod of an Indexed Job gets the same input; Kubernetes tells each its own index.
    index = os.environ.get(COMPLETION_INDEX_ENV)
    if index is not None:
        stage = stage.model_copy(update={"worker_index": int(index)})
        if stage.worker_index >= stage.worker_count:
            raise StorageError(
                f"{COMPLETION_INDEX_ENV}={index} but the stage input says workerCount={stage.worker_count}"
            )
    return stage


def stage_input_or_report(path: Path | None, stage: str = "tuning") -> StageInput | None:
    """The stage input for an entry point, or None after printing (and reporting to the operator)
    why it is invalid (exit code 2)."""
    try:
        return read_stage_input(path)
    except ValidationError as exc:
        problem = f"invalid stage input: {exc}"
    except OptiloopError as exc:
        problem = str(exc)
    print(problem, file=sys.stderr)
    report_outcome(failed_outcome(stage, "InvalidInput", problem))
    return None


def configure_threads() -> int:
    """Bound torch to the CPUs this process may use (or ``OPTILOOP_THREADS``)."""
    threads = int(os.environ.get(THREADS_ENV, "0")) or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    return threads
