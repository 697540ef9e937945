# syntax=docker/dockerfile:1
#
# One image for every process of inventory-saga: `invsaga worker` (the default), `invsaga api`,
# `invsaga codec-server`, `invsaga payments serve`, and the one-shot jobs `invsaga db migrate` and
# `invsaga audit`.
#
#   docker build -t inventory-saga:local .
#   docker run --rm inventory-saga:local --help
#
# Dependencies come from docker/requirements.lock (pinned and hashed; regenerate it with
# docker/update-lock.sh), so a rebuild installs exactly what the test suite ran against.
# See docs/operations.md.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- build: a virtualenv holding the locked dependencies and our packages --------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/invsaga

# Third-party packages first, in their own layer, so a code change does not reinstall them.
COPY docker/requirements.lock /tmp/requirements.lock
RUN /opt/invsaga/bin/pip install --require-hashes --no-deps -r /tmp/requirements.lock

# The context is an allowlist (.dockerignore): pyproject.toml and our packages, nothing else.
WORKDIR /src
COPY . ./
# --no-build-isolation: build with the locked setuptools instead of fetching an unpinned one.
# compileall: the runtime never writes bytecode (PYTHONDONTWRITEBYTECODE), and Temporal's workflow
# sandbox re-imports the workflow module for every workflow run; without a .pyc it compiles the source
# each time, which a profile of the worker showed as about a tenth of its CPU.
RUN /opt/invsaga/bin/pip install --no-deps --no-build-isolation . \
    && /opt/invsaga/bin/python -m compileall -q /opt/invsaga/lib \
    && /opt/invsaga/bin/pip check \
    && /opt/invsaga/bin/invsaga --help > /dev/null

# --- runtime: the virtualenv on a clean base, run as an unprivileged user ----------------------------
FROM ${PYTHON_IMAGE} AS runtime

RUN groupadd --system --gid 10001 invsaga \
    && useradd --system --uid 10001 --gid invsaga --home-dir /home/invsaga --create-home \
        --shell /usr/sbin/nologin invsaga

COPY --from=build /opt/invsaga /opt/invsaga

ENV PATH=/opt/invsaga/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /home/invsaga
# A numeric user, so an orchestrator can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001

# api, payments sandbox, worker health, codec server, worker Prometheus metrics
EXPOSE 8000 8081 8088 8234 9464

ENTRYPOINT ["invsaga"]
CMD ["worker"]
