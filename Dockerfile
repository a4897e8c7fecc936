# One image for the oomsight agent (DaemonSet), operator (Deployment) and CLI.
#   docker build -t oomsight:0.1.0 .
#   docker run --rm oomsight:0.1.0 --version
# The base is pinned by version tag. Pin it by digest too (BASE=python:3.11.14-slim-bookworm@sha256:...)
# where a registry is reachable; the machine this was written on cannot fetch one.
#
# BASE may be any Debian bookworm root whose python3 is 3.11 and has the venv module (the official
# python image, or Debian's python3 + python3-venv). hack/image builds the image with no registry at
# all: a bookworm root made by mmdebstrap as BASE, buildah, and a wheelhouse passed in through
# PIP_FIND_LINKS + PIP_NO_INDEX, so the build itself needs no network (tests/test_image.py runs it).
ARG BASE=python:3.11.14-slim-bookworm

FROM ${BASE} AS builder
# Set only by an offline build (hack/image); empty, pip uses its index as usual.
ARG PIP_FIND_LINKS=""
ARG PIP_NO_INDEX=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# One venv for the build tools, one (without pip) for the runtime: the runtime stage copies only the
# second, so the image carries oomsight and its dependencies and nothing to build or install with.
RUN python3 -m venv /build \
    && /build/bin/pip wheel --wheel-dir /wheels . \
    && python3 -m venv --without-pip /opt/oomsight \
    && /build/bin/pip --python /opt/oomsight/bin/python install --no-index --find-links=/wheels /wheels/*.whl

FROM ${BASE}
LABEL org.opencontainers.image.title="oomsight" \
      org.opencontainers.image.description="Explains Kubernetes OOM kills from the kernel's own evidence" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/oomsight/bin:$PATH
COPY --from=builder /opt/oomsight /opt/oomsight
# A passwd entry for the runtime user: kopf (the operator) asks getpass.getuser(), which fails for a uid
# with no name. The distroless "nonroot" uid and gid, no home, no login shell.
RUN groupadd --system --gid 65532 nonroot \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin nonroot
# Non-root by default (the distroless "nonroot" uid). The operator and the CLI run as this user;
# only the agent's pod spec overrides it (runAsUser: 0, with all capabilities dropped but SYSLOG
# and SYS_PTRACE) because the kernel log and its hostPath state directory are root-owned on the node.
USER 65532:65532
ENTRYPOINT ["oomsight"]
