"""The local run's own failures (the job stages raise theirs, see ``optiloop.jobs.errors``)."""

from __future__ import annotations

from ..errors import OptiloopError


class RunError(OptiloopError):
    """A local-run step failed (the predictor did not start or answered wrongly, ...)."""


class DriftEnvironmentMissingError(RunError):
    """No interpreter of the drift environment was found."""
