# One image for the oomsight agent (DaemonSet), operator (Deployment) and CLI.
#   docker build -t oomsight:0.1.0 .
#   docker run --rm oomsight:0.1.0 --version
# The base is pinned by version tag. Pin it by digest too (FROM python:3.11.14-slim-bookworm@sha256:...)
# where a registry is reachable; the machine this was written on cannot fetch one.
# tests/test_dockerfile.py lints this file with hadolint and replays its pip steps in a fresh venv.

FROM python:3.11.14-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# Wheels for oomsight and every dependency; the runtime stage installs them offline.
RUN pip wheel --wheel-dir /wheels .

FROM python:3.11.14-slim-bookworm
LABEL org.opencontainers.image.title="oomsight" \
      org.opencontainers.image.description="Explains Kubernetes OOM kills from the kernel's own evidence" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/*.whl
# Non-root by default (the distroless "nonroot" uid). The operator and the CLI run as this user;
# only the agent's pod spec overrides it (runAsUser: 0, with all capabilities dropped but SYSLOG
# and SYS_PTRACE) because /dev/kmsg and its hostPath state directory are root-owned on the node.
USER 65532:65532
ENTRYPOINT ["oomsight"]
