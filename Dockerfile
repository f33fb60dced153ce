# neuropool, CPU image: the Dask scheduler and workers, the Prefect worker and server of the Helm
# chart (helm/neuropool), and the neuropool CLI.
#
#   docker build -t ghcr.io/neuropool/neuropool:0.1.0 .
#
# The chart gives every container its full command (neuropool scheduler ..., neuropool worker ...,
# prefect worker start ..., prefect server start ...), so the image has no ENTRYPOINT. Pods run as
# uid 10001 with a read-only root filesystem and an emptyDir on /tmp: every cache goes to /tmp.
# The GPU variant (kilosort4 on CUDA) is Dockerfile.gpu.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: a virtual environment with neuropool and its extras --------------------------------
FROM ${PYTHON_IMAGE} AS builder

# Compilers only for a dependency that has no wheel for this platform (none on linux/amd64 today);
# the runtime stage below has none.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv

# The project's own files only (see .dockerignore): a plain, non-editable install into the venv.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY neuropool/ neuropool/
# s3: fsspec's S3 filesystem; prefect: flows and `neuropool deploy`; kubernetes: the Prefect
# worker of type kubernetes (the chart's prefect.worker.type: kubernetes).
RUN pip install --no-cache-dir ".[s3,prefect,kubernetes]"

# --- runtime -------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

ARG NEUROPOOL_VERSION=0.1.0
LABEL org.opencontainers.image.source="https://github.com/neuropool/neuropool" \
      org.opencontainers.image.version="${NEUROPOOL_VERSION}" \
      org.opencontainers.image.title="neuropool" \
      org.opencontainers.image.description="Neuropixels preprocessing, spike sorting, QC and brain localisation over Dask pools and Prefect flows (CPU)" \
      org.opencontainers.image.licenses="MIT"

# A numeric, non-root user (Kubernetes' runAsNonRoot can only check a numeric USER).
RUN groupadd --gid 10001 neuropool \
    && useradd --no-log-init --uid 10001 --gid 10001 --home-dir /home/neuropool --create-home \
       --shell /usr/sbin/nologin neuropool

COPY --from=builder /opt/venv /opt/venv
# Pipeline configs, cluster profiles (./configs/cluster) and the Prefect deployments
# (neuropool deploy --prefect-file /opt/neuropool/configs/prefect.yaml).
COPY configs/ /opt/neuropool/configs/

# The root filesystem is read-only in the chart's pods: numba's cache, matplotlib's config, Prefect's
# home (and the server's SQLite database) and other caches live under /tmp (an emptyDir there).
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/neuropool \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    PREFECT_HOME=/tmp/prefect \
    XDG_CACHE_HOME=/tmp/.cache \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /opt/neuropool
USER 10001:10001

# Dask scheduler, Dask dashboard, Prefect server.
EXPOSE 8786 8787 4200
CMD ["neuropool", "--help"]
