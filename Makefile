# The two commands a fresh machine needs are `make install` and `make test`;
# .ci/run calls exactly these. The real work is in hack/*.sh.
.PHONY: install test lock crd control-plane bench mutate

install:  ## Create .venv and .venv-drift from the locks and build the test control plane
	hack/install.sh

test:  ## Lint, type-check, check layer contracts and the CRD, run all tests
	hack/test.sh $(ARGS)

lock:  ## Re-resolve requirements/*.lock after changing pyproject.toml
	hack/lock.sh

crd:  ## Regenerate crds/ from optiloop/api
	.venv/bin/python -m optiloop.api.crd

control-plane:  ## Build (or locate) kube-apiserver and etcd
	hack/build-control-plane.sh

bench:  ## Run the benchmarks at reduced size (see docs/benchmarks.md for the full commands)
	.venv/bin/python bench/tuning.py --quick
	.venv/bin/python bench/compression.py --quick
	.venv/bin/python bench/quality.py --quick
	.venv/bin/python bench/serving.py --quick
	.venv/bin/python bench/batching.py --quick
	.venv/bin/python bench/node_batching.py --quick
	.venv-drift/bin/python bench/drift.py --quick
	.venv/bin/python bench/operator_scale.py --sizes 10 100

mutate:  ## Mutation-test the operator's decisions, the API's validation and the gates (docs/mutation.md)
	rm -rf mutants
	.venv/bin/mutmut run
	.venv/bin/mutmut results
