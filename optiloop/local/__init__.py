"""``optiloop run``: the whole pipeline on one machine, from the same manifest as the cluster.

A thin orchestrator over the job stages (``optiloop.jobs``): no stage is implemented twice.
The predictor and the drift monitor run as the same processes the cluster runs, on loopback.
"""
