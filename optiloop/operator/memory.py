"""What the operator keeps about each resource between reconciles, in one record per resource
(Kopf's ``ResourceMemory``): its lock, the spec last handed to a reconcile, the request waiting
for it, and when it next needs to run."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass
class ResourceMemory:
    """One resource's record; the loop reads and writes it under its own guard."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    """Held while the resource is reconciled: calls for one resource take turns."""
    handled: tuple[str, int] | None = None
    """The (uid, generation) last handed to a reconcile in this process."""
    waiting: bool = False
    """A reconcile is queued or waiting for the lock; later requests fold into it."""
    folded: bool | None = None
    """Requests folded into the waiting reconcile (None: none), and whether any asked for drift."""
    last_full: datetime | None = None
    """When the latest reconcile started."""
    failures: int = 0
    """Reconciles that failed in a row."""
    retry_at: datetime | None = None
    """When to retry after the latest failure (backing off); None while reconciles succeed."""
    requeue_at: datetime | None = None
    """When the latest plan asked to run again (see :attr:`optiloop.operator.planning.plan.Plan.requeue_at`)."""

    def due(self, now: datetime, full_resync_seconds: float) -> bool:
        """Whether a timer tick at ``now`` has work: a retry once its backoff is over, else the
        plan's requeue time, else a full reconcile every ``full_resync_seconds``."""
        if self.retry_at is not None:
            return now >= self.retry_at
        if self.last_full is None or now - self.last_full >= timedelta(seconds=full_resync_seconds):
            return True
        return self.requeue_at is not None and now >= self.requeue_at

    def succeeded(self, requeue_at: datetime | None) -> None:
        """A reconcile finished: no backoff, and the next run when its plan asked."""
        self.failures, self.retry_at, self.requeue_at = 0, None, requeue_at

    def failed(self, now: datetime, first_delay: float, cap: float) -> None:
        """A reconcile failed: retry after ``first_delay`` seconds, twice as long after each
        failure in a row, at most ``cap``."""
        self.failures += 1
        delay = min(first_delay * 2 ** min(self.failures - 1, 30), cap)
        self.retry_at = now + timedelta(seconds=delay)
