"""Crash points for the reliability tests (the failpoint technique of etcd and TiKV).

``OPTILOOP_FAILPOINT=after-create:Job`` makes the operator SIGKILL itself right after it created
a Job, before it writes status: the window RELIABILITY.md's first scenario aims at. Unset (always,
outside those tests) it costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

FAILPOINT_ENV = "OPTILOOP_FAILPOINT"


def reached(point: str) -> None:
    """Die here, without cleanup, when ``point`` is the configured failpoint."""
    if os.environ.get(FAILPOINT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)
