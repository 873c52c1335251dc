"""The Kopf operator that reconciles ModelOptimization resources (handlers, pure reconcile and
status logic, builders of child objects, and the only Kubernetes and Prometheus callers)."""
