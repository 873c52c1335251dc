"""The one error the format readers raise."""

from __future__ import annotations


class FormatError(ValueError):
    """A file does not hold what its format says; the message names the file and what is wrong."""
