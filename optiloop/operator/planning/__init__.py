"""The pure planner, split by concern (as CloudNativePG splits its controller):

* :mod:`.plan`: what a reconcile decides (child writes, Events, status, when to run next);
* :mod:`.draft`: the scratch state one reconcile rewrites;
* :mod:`.revisions`: when a revision starts (creation, spec change, drift, schedule);
* :mod:`.stages`: the tuning and compression Jobs of a revision;
* :mod:`.serving`: the InferenceService, the canary and its promotion or rollback;
* :mod:`.monitor`: the drift monitor;
* :mod:`.rollup`: ``Ready`` and ``phase`` from the other conditions;
* :mod:`.requeue`: when the planner next needs to run with no event to prompt it;
* :mod:`.blocked`: the status of a resource that cannot be planned for.

:func:`optiloop.operator.reconcile.reconcile` runs them in order. Nothing here does I/O or
reads a clock (an import-linter contract keeps Kubernetes, Prometheus and Kopf out).
"""
