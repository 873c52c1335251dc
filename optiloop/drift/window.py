"""A bounded window of recent rows: sliding (the last N rows) or tumbling (N rows, then empty).

Memory is fixed at ``size`` rows whatever the traffic: in both modes rows arriving at a full
window overwrite the oldest. A sliding window is evaluated every ``step`` new rows once full;
a tumbling window when full, and it is emptied afterwards, so windows never overlap.
"""

from __future__ import annotations

import threading

import numpy as np


class Window:
    """A ring buffer of ``size`` rows of ``width`` features; safe to use from several threads."""

    def __init__(self, size: int, width: int, mode: str = "sliding", step: int | None = None) -> None:
        if mode not in ("sliding", "tumbling"):
            raise ValueError(f"window mode must be sliding or tumbling, not {mode!r}")
        self.size, self.width, self.mode = size, width, mode
        self.step = step or max(1, size // 10)
        self._rows = np.zeros((size, width), dtype=np.float64)
        self._count = 0  # rows held, at most size
        self._next = 0  # where the next row goes
        self._new = 0  # rows added since the last evaluation
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._count

    def add(self, rows: np.ndarray) -> None:
        """Append rows, overwriting the oldest when full."""
        if rows.ndim != 2 or rows.shape[1] != self.width:
            raise ValueError(f"rows must have shape (n, {self.width}), got {rows.shape}")
        with self._lock:
            for start in range(0, len(rows), self.size):
                chunk = rows[start : start + self.size]
                end = self._next + len(chunk)
                if end <= self.size:
                    self._rows[self._next : end] = chunk
                else:
                    split = self.size - self._next
                    self._rows[self._next :] = chunk[:split]
                    self._rows[: end - self.size] = chunk[split:]
                self._next = end % self.size
                self._count = min(self.size, self._count + len(chunk))
            self._new += len(rows)

    def due(self) -> bool:
        """Whether an evaluation is due: the window is full and (sliding) ``step`` new rows arrived."""
        with self._lock:
            return self._count == self.size and (self.mode == "tumbling" or self._new >= self.step)

    def take(self) -> np.ndarray:
        """The rows to evaluate, oldest first; a tumbling window starts empty afterwards."""
        with self._lock:
            if self._count < self.size:
                ordered = self._rows[: self._count].copy()
            else:
                ordered = np.concatenate([self._rows[self._next :], self._rows[: self._next]])
            self._new = 0
            if self.mode == "tumbling":
                self._count, self._next = 0, 0
            return ordered
