# syntax=docker/dockerfile:1
#
# One image for every virtdev command: `virtdev webhook` (Deployment), `virtdev agent`
# (DaemonSet) and `virtdev certs ensure` (Job, CronJob). The manifests choose the command with
# `args`, and the agent's manifest sets the uid it needs (0, see its DaemonSet); by default
# the image runs as the unprivileged uid 65532.
#
#   docker build -t REGISTRY/virtdev:0.1.0 .
#
# The base is pinned by version and by the digest of its multi-architecture index, in both
# stages (the virtualenv built in the first stage links to the second stage's interpreter, so
# they must be the same image).

FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
# Only what the package is built from (.dockerignore keeps everything else out of the context).
COPY pyproject.toml README.md ./
COPY virtdev/ virtdev/
COPY webhook/ webhook/
COPY agent/ agent/
COPY certs/ certs/

# The install scripts/setup.sh does for the tests (`pip install` of this project), without the
# test extra and not editable: the project and its dependencies, as wheels, into a virtualenv
# that has no pip of its own (pip compiles the .pyc files as it installs). Every dependency
# ships binary wheels for linux amd64 and arm64, so nothing is compiled from C. The last
# command proves the entry point starts.
RUN python -m venv --without-pip /opt/virtdev \
 && python -m pip --python /opt/virtdev/bin/python install --no-cache-dir . \
 && /opt/virtdev/bin/virtdev --version


FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# Set by the release build: --build-arg REVISION=$(git rev-parse HEAD) --build-arg SOURCE=URL
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=
LABEL org.opencontainers.image.title="virtdev" \
      org.opencontainers.image.description="Run KubeVirt virt-launcher pods without privileges: kubelet device plugin for /dev/kvm and /dev/net/tun, and its admission webhook" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.14-slim-bookworm"

# Logs leave the process at once (the cluster's log pipeline sees a crash's last lines); no
# .pyc files are written at run time (the root filesystem is read-only; they were compiled
# at build time).
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/virtdev/bin:$PATH

# The virtualenv alone: no sources, no build tools, no pip cache. Owned by root and not
# writable by the uid that runs it; readable by any uid (OpenShift assigns its own).
COPY --from=build /opt/virtdev /opt/virtdev

# Kubernetes ignores HEALTHCHECK; the manifests' probes call /healthz and /readyz instead.
# checkov:skip=CKV_DOCKER_2:Kubernetes ignores HEALTHCHECK; the manifests define liveness and readiness probes on each command's own port (8080 webhook, 8081 agent)

# The unprivileged "nonroot" uid and gid conventionally used by minimal images. Numeric, so that
# the kubelet can check runAsNonRoot without a passwd entry.
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["virtdev"]
CMD ["--help"]
