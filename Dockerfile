# syntax=docker/dockerfile:1.7
# One target per image. Build with, for example:
#   docker build --target drift -t optiloop-drift .
# Every target installs only its own extra, from its hash-checked lock, into /opt/venv in a
# builder stage; the final stage copies that venv onto the slim base (no compilers, no pip
# cache) and runs as the non-root user 65532. tests/unit/test_images.py builds each target's
# environment from the same lines, so they cannot rot unnoticed without a Docker engine.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN groupadd --gid 65532 optiloop \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin optiloop

# --- operator ------------------------------------------------------------------
FROM base AS operator-builder
COPY requirements/operator.lock /tmp/operator.lock
COPY pyproject.toml README.md /src/
COPY optiloop /src/optiloop
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/operator.lock \
 && /opt/venv/bin/pip install --no-deps /src \
 && /opt/venv/bin/python -c "import optiloop.operator.handlers"

FROM base AS operator
COPY --from=operator-builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp
USER 65532:65532
EXPOSE 8080 8081
# Probes: GET :8081/healthz (Kopf's liveness endpoint); the chart sets them.
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/healthz', timeout=2)"
ENTRYPOINT ["python", "-m", "optiloop"]
CMD ["operator"]

# --- tuning and compression Jobs ---------------------------------------------------
FROM base AS jobs-builder
COPY requirements/jobs.lock /tmp/jobs.lock
COPY pyproject.toml README.md /src/
COPY optiloop /src/optiloop
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/jobs.lock \
 && /opt/venv/bin/pip install --no-deps /src \
 && /opt/venv/bin/python -c "import optiloop.jobs.tune, optiloop.jobs.compress"

FROM base AS jobs
COPY --from=jobs-builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp
USER 65532:65532
# No HEALTHCHECK: a Job pod runs to completion; the operator sets the command
# (python -m optiloop.jobs.tune or optiloop.jobs.compress) and reads the termination message.
CMD ["python", "-m", "optiloop.jobs.tune", "--help"]

# --- predictor ---------------------------------------------------------------------
FROM base AS serve-builder
COPY requirements/serve.lock /tmp/serve.lock
COPY pyproject.toml README.md /src/
COPY optiloop /src/optiloop
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/serve.lock \
 && /opt/venv/bin/pip install --no-deps /src \
 && /opt/venv/bin/python -c "import optiloop.serve.server"

FROM base AS serve
COPY --from=serve-builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp
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
FROM base AS drift-builder
ARG ALIBI_DETECT_VERSION=0.11.4
COPY requirements/drift.lock /tmp/drift.lock
COPY pyproject.toml README.md /src/
COPY optiloop/__init__.py /src/optiloop/__init__.py
COPY optiloop/drift /src/optiloop/drift
RUN python -m venv /opt/venv \
 && if [ "$ALIBI_DETECT_VERSION" = "0.11.4" ]; then \
      /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/drift.lock; \
    else \
      /opt/venv/bin/pip install "alibi-detect==${ALIBI_DETECT_VERSION}" "prometheus-client>=0.20" "aiohttp>=3.9" torch; \
    fi \
 && /opt/venv/bin/pip install --no-deps /src \
 && /opt/venv/bin/python -c "import optiloop.drift.service, alibi_detect; print(alibi_detect.__version__)"

FROM base AS drift
COPY --from=drift-builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
USER 65532:65532
EXPOSE 8080
# Probes: GET /healthz (liveness) and GET /readyz (readiness: the reference is loaded).
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"
ENTRYPOINT ["python", "-m", "optiloop.drift", "serve"]
CMD ["--model-dir", "/mnt/model", "--port", "8080"]
