#!/usr/bin/env bash
# Starts the test node by hand: a whole single-node Kubernetes cluster (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, containerd, kubelet, kube-proxy, CoreDNS) in its own
# network, mount and PID namespaces, as the tests in tests/node start it (tests/support/node.py).
# Prints the kubeconfig to use; Ctrl-C tears everything down. Needs root and `make install`.
#
#   hack/node.sh [--workdir DIR] [--image TARGET]...   (imports this checkout's image of TARGET: operator, jobs, serve, drift)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[[ -x .venv/bin/python ]] || { echo "node: no .venv here; run 'make install' first" >&2; exit 1; }
exec .venv/bin/python -m tests.support.node "$@"
