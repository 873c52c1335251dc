"""The drift monitor: Alibi Detect on live inference inputs, exported to Prometheus.

It runs in its own environment (Alibi Detect 0.11.4 needs pydantic 1 and numpy < 1.25),
so it must not import any other part of optiloop; an import-linter contract enforces it.
"""
