"""optiloop: a Kubernetes operator that keeps machine-learning models optimized for their whole life."""

__version__ = "0.1.0"
