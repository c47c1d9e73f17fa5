# syntax=docker/dockerfile:1.7
# The PenguinMails image: one image carries every program (penguinmails-operator, the sender
# the operator runs in tenant namespaces, the customer API with the dashboard it serves),
# installed as a wheel into a virtualenv, and the dashboard's static build.
#
#   docker build -t ghcr.io/penguinmails/penguinmails:0.1.0 .
#
# Builder and runtime use the same base image, so the virtualenv's interpreter path
# (/usr/local/bin/python3.11) exists in both. Pin the base by digest in release builds:
#   --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# The dashboard's build stage: Node 20, as `make web` uses.
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only what the wheel is built from. penguinmails/ holds symlinks to the top-level folders
# (penguinmails/operator -> ../operator, ...); COPY keeps them as symlinks, and the folders they
# point to are copied beside them, so setuptools resolves them exactly as in a checkout.
COPY pyproject.toml README.md ./
COPY penguinmails/ penguinmails/
COPY api/ api/
COPY common/ common/
COPY operator/ operator/
COPY sender/ sender/
COPY dev/ dev/
# The virtualenv gets no pip of its own: the builder's pip installs into it (--python), so the
# runtime image has no installer. Every dependency ships manylinux wheels for amd64 and arm64,
# so no compiler is needed; --only-binary makes a missing wheel an error instead of a source build.
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv --without-pip /opt/venv \
    && python -m pip wheel --no-deps --wheel-dir /wheels . \
    && python -m pip --python /opt/venv/bin/python install --compile \
         --only-binary=:all: /wheels/penguinmails-*.whl \
    && /opt/venv/bin/python -c "import penguinmails.operator.__main__"

# The dashboard (web/): packages from the lockfile, then the static build the API serves at /.
# Its API types (web/src/api/schema.d.ts) are committed, checked against the API by `make test`.
FROM ${NODE_IMAGE} AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="penguinmails" \
      org.opencontainers.image.description="PenguinMails operator and sender" \
      org.opencontainers.image.source="https://github.com/penguinmails/penguinmails" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
# No build tools, no pip in the venv, no shell login for the user; the base image's own pip is
# removed too, so nothing in the image can install packages at run time.
RUN groupadd --system --gid 10001 penguinmails \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
         --shell /usr/sbin/nologin penguinmails \
    && python -m pip uninstall --yes --quiet pip setuptools wheel
COPY --from=builder /opt/venv /opt/venv
COPY --from=web /web/dist /opt/penguinmails/dashboard
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PM_DASHBOARD_DIR=/opt/penguinmails/dashboard
# Numeric, so Kubernetes can verify runAsNonRoot without resolving a name.
USER 10001:10001
# 8080: Prometheus /metrics; 8081: kopf liveness /healthz.
EXPOSE 8080 8081
ENTRYPOINT ["penguinmails-operator"]
