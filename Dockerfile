# syntax=docker/dockerfile:1.7
# One target per image. Build with, for example:
#   docker build --target drift -t optiloop-drift .
# or, without a Docker engine, hack/build-images.sh (buildah on a base image made from Debian).
#
# Every image is a few layers over the base: its locked dependencies (a virtual environment
# installed from its hash-checked lock in its `<target>-deps` stage, which the final stage starts
# from, so the large layer is stored once), then optiloop itself (built once in the `code` stage),
# then the check that its entry point imports. A code change rebuilds only the last, small layers:
# the dependencies (torch among them) are never reinstalled for it. No stage installs a compiler,
# pip keeps no cache, and the images run as the non-root user 65532.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN groupadd --gid 65532 optiloop \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin optiloop

# --- optiloop itself ---------------------------------------------------------------
# Installed as a package tree with its metadata (the predictor reports its version), compiled with
# hash-checked .pyc files so they stay valid when copied into each image (the user cannot write them).
# The README is only the package's long description: an empty one keeps documentation edits from
# rebuilding the images.
FROM base AS code
COPY pyproject.toml /src/
COPY optiloop /src/optiloop
RUN : >/src/README.md \
 && python -m venv /opt/build \
 && /opt/build/bin/pip install --no-deps --no-compile --target /opt/code /src \
 && rm -rf /opt/code/bin \
 && python -m compileall -q --invalidation-mode checked-hash /opt/code

# The drift monitor's environment has pydantic 1, so it gets only the part of optiloop it imports
# (optiloop.drift and the dependency-free optiloop.formats; import-linter enforces that).
FROM base AS drift-code
COPY pyproject.toml /src/
COPY optiloop/__init__.py /src/optiloop/__init__.py
COPY optiloop/drift /src/optiloop/drift
COPY optiloop/formats /src/optiloop/formats
RUN : >/src/README.md \
 && python -m venv /opt/build \
 && /opt/build/bin/pip install --no-deps --no-compile --target /opt/code /src \
 && rm -rf /opt/code/bin \
 && python -m compileall -q --invalidation-mode checked-hash /opt/code

# --- operator ------------------------------------------------------------------
FROM base AS operator-deps
COPY requirements/operator.lock /tmp/operator.lock
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/operator.lock

FROM operator-deps AS operator
COPY --from=code /opt/code/ /opt/venv/lib/python3.11/site-packages/
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp
RUN rm -f /tmp/*.lock \
 && python -c "import optiloop.operator.handlers"
USER 65532:65532
EXPOSE 8080 8081
# Probes: GET :8081/healthz (Kopf's liveness endpoint); the chart sets them.
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/healthz', timeout=2)"
ENTRYPOINT ["python", "-m", "optiloop"]
CMD ["operator"]

# --- tuning and compression Jobs ---------------------------------------------------
# torch from PyPI is the CUDA build: it loads the nvidia-* libraries of the lock at import even on a
# CPU, so they stay. Triton (torch's GPU kernel compiler, about 700 MB) is left out: nothing here
# compiles kernels, and torch imports, trains and exports ONNX without it.
FROM base AS jobs-deps
COPY requirements/jobs.lock /tmp/jobs.lock
RUN awk '/^[^ #]/ { skip = ($0 ~ /^triton==/) } !skip' /tmp/jobs.lock > /tmp/jobs-cpu.lock \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/jobs-cpu.lock

FROM jobs-deps AS jobs
COPY --from=code /opt/code/ /opt/venv/lib/python3.11/site-packages/
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp
RUN rm -f /tmp/*.lock \
 && python -c "import optiloop.jobs.tune, optiloop.jobs.compress"
USER 65532:65532
# No HEALTHCHECK: a Job pod runs to completion; the operator sets the command
# (python -m optiloop.jobs.tune or optiloop.jobs.compress) and reads the termination message.
CMD ["python", "-m", "optiloop.jobs.tune", "--help"]

# --- predictor ---------------------------------------------------------------------
FROM base AS serve-deps
COPY requirements/serve.lock /tmp/serve.lock
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/serve.lock

FROM serve-deps AS serve
COPY --from=code /opt/code/ /opt/venv/lib/python3.11/site-packages/
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp
RUN rm -f /tmp/*.lock \
 && python -c "import optiloop.serve.server"
USER 65532:65532
EXPOSE 8080
# Probes: KServe's GET /v2/health/live and /v2/health/ready (the model directory is verified and loaded).
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/v2/health/live', timeout=2)"
ENTRYPOINT ["python", "-m", "optiloop.serve"]
CMD ["--model-dir", "/mnt/models", "--http-port", "8080"]

# --- drift monitor -------------------------------------------------------------
# Alibi Detect 0.11.4 is the last Apache-2.0 release (see README, "Licensing"). Teams holding a
# commercial licence for a later release may choose it with --build-arg ALIBI_DETECT_VERSION=...;
# that install resolves the newer release's own dependencies and is not hash-locked.
# Its MMD detector runs on torch (CPU), so the CUDA libraries stay as in the jobs image; Triton does not.
FROM base AS drift-deps
ARG ALIBI_DETECT_VERSION=0.11.4
COPY requirements/drift.lock /tmp/drift.lock
RUN python -m venv /opt/venv \
 && if [ "$ALIBI_DETECT_VERSION" = "0.11.4" ]; then \
      awk '/^[^ #]/ { skip = ($0 ~ /^triton==/) } !skip' /tmp/drift.lock > /tmp/drift-cpu.lock \
      && /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/drift-cpu.lock; \
    else \
      /opt/venv/bin/pip install "alibi-detect==${ALIBI_DETECT_VERSION}" "prometheus-client>=0.20" "aiohttp>=3.9" torch; \
    fi

FROM drift-deps AS drift
COPY --from=drift-code /opt/code/ /opt/venv/lib/python3.11/site-packages/
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp
# Importing Alibi Detect leaves torch's compile cache in /tmp (torchinductor_root): not for the image.
RUN rm -f /tmp/*.lock \
 && python -c "import optiloop.drift.service, alibi_detect; print(alibi_detect.__version__)" \
 && rm -rf /tmp/torchinductor_root
USER 65532:65532
EXPOSE 8080
# Probes: GET /healthz (liveness) and GET /readyz (readiness: the reference is loaded).
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"
ENTRYPOINT ["python", "-m", "optiloop.drift", "serve"]
CMD ["--model-dir", "/mnt/model", "--port", "8080"]
