# syntax=docker/dockerfile:1.7
#
# tts-stream worker images. Two targets:
#
#   docker build --target gpu -t tts-stream:0.1.0-gpu .   CUDA runtime; CosyVoice engine (default)
#   docker build --target cpu -t tts-stream:0.1.0-cpu .   slim; espeak and null engines
#
# No model is baked in: the Helm chart mounts it read-only (optionally filled by
# `tts-stream models pull`). Both run as UID 10001 with a read-only root filesystem in mind:
# only /tmp (a volume in Kubernetes and compose) is written. The CosyVoice source tree is not on
# PyPI: the gpu target builds it in at the pinned commit (scripts/cosyvoice.sh); to build from
# the source archives instead of a clone:
#
#   docker build --target gpu --build-context cosyvoice-archives=<dir with the tarballs> ...
#
# Build arguments: VERSION, REVISION and CREATED feed the OCI labels; PIP_INDEX_URL and
# PIP_EXTRA_INDEX_URL select package indexes (e.g. the PyTorch CPU wheel index for the cpu target,
# which keeps CUDA libraries out of it).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------- the project as a wheel ---------
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
RUN python -m pip install --no-cache-dir "build>=1.2"
COPY pyproject.toml README.md LICENSE ./
COPY schemas ./schemas
COPY producer ./producer
COPY consumer ./consumer
COPY tts_stream ./tts_stream
RUN python -m build --wheel --outdir /wheels .

# ---------------------------------------------------------------- CPU: dependencies --------------
FROM ${PYTHON_IMAGE} AS cpu-venv
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/tts-stream
COPY --from=wheel /wheels /wheels
RUN set -eux; wheel="$(ls /wheels/tts_stream-*.whl)"; \
    /opt/tts-stream/bin/pip install "${wheel}[worker,espeak]"

# ---------------------------------------------------------------- CPU: runtime -------------------
FROM ${PYTHON_IMAGE} AS cpu
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="tts-stream" \
      org.opencontainers.image.description="Kafka stream processor for text-to-speech (CPU: espeak and null engines)" \
      org.opencontainers.image.licenses="Apache-2.0 AND GPL-3.0-or-later" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.vendor="tts-stream developers"
# libgomp: torch's CPU kernels. Nothing else from the OS is needed (soundfile bundles libsndfile).
RUN set -eux; apt-get update; \
    apt-get install -y --no-install-recommends libgomp1; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --system --gid 10001 tts; \
    useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin tts
COPY --from=cpu-venv /opt/tts-stream /opt/tts-stream
ENV PATH=/opt/tts-stream/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    TTS_ENGINE=espeak \
    TTS_DEVICE=cpu \
    TTS_HTTP_HOST=0.0.0.0 \
    TTS_HTTP_PORT=8080
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
# Liveness of the poll loop; the start period covers engine start-up. One-shot commands
# (`topics ensure`, `models pull`) finish before the first check matters.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=4 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/livez' % os.environ.get('TTS_HTTP_PORT', '8080'), timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["tts-stream"]
CMD ["worker"]

# ---------------------------------------------------------------- gateway: no torch -------------
# The HTTP gateway (docs/gateway.md) is producer side: the `[gateway]` extra, no torch, no engine.
FROM ${PYTHON_IMAGE} AS gateway-venv
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/tts-stream
COPY --from=wheel /wheels /wheels
RUN set -eux; wheel="$(ls /wheels/tts_stream-*.whl)"; \
    /opt/tts-stream/bin/pip install "${wheel}[gateway]"

FROM ${PYTHON_IMAGE} AS gateway
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="tts-stream-gateway" \
      org.opencontainers.image.description="HTTP gateway (REST and OpenAI-compatible speech) in front of tts-stream" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.vendor="tts-stream developers"
RUN set -eux; groupadd --system --gid 10001 tts; \
    useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin tts
COPY --from=gateway-venv /opt/tts-stream /opt/tts-stream
ENV PATH=/opt/tts-stream/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TTS_GATEWAY_HOST=0.0.0.0 \
    TTS_GATEWAY_PORT=8000
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=4 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/livez' % os.environ.get('TTS_GATEWAY_PORT', '8000'), timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["tts-stream"]
CMD ["gateway"]

# ---------------------------------------------------------------- GPU: CosyVoice source ---------
# The pinned CosyVoice commit and its Matcha-TTS submodule, fetched by the same script as
# `make cosyvoice`: from `git archive` tarballs when they are passed as the named context
# `cosyvoice-archives` (`--build-context cosyvoice-archives=<dir>`, for builders without
# network), otherwise cloned at the pinned commit.
FROM scratch AS cosyvoice-archives
COPY LICENSE /.tts-stream-placeholder

FROM ${PYTHON_IMAGE} AS cosyvoice-src
RUN set -eux; apt-get update; \
    apt-get install -y --no-install-recommends git ca-certificates; \
    rm -rf /var/lib/apt/lists/*
COPY scripts/cosyvoice.sh /build/scripts/cosyvoice.sh
COPY --from=cosyvoice-archives / /build/archives/
RUN set -eux; \
    if ls /build/archives/cosyvoice-*.tar.gz >/dev/null 2>&1; then export TTS_COSYVOICE_ARCHIVES=/build/archives; fi; \
    /build/scripts/cosyvoice.sh --source-only /opt/src; \
    rm -rf /opt/src/CosyVoice/.git /opt/src/CosyVoice/third_party/Matcha-TTS/.git

# ---------------------------------------------------------------- GPU: dependencies --------------
FROM ${CUDA_IMAGE} AS gpu-venv
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
RUN set -eux; apt-get update; \
    apt-get install -y --no-install-recommends python3 python3-venv; \
    rm -rf /var/lib/apt/lists/*; \
    python3 -m venv /opt/tts-stream
COPY --from=wheel /wheels /wheels
RUN set -eux; wheel="$(ls /wheels/tts_stream-*.whl)"; \
    /opt/tts-stream/bin/pip install "${wheel}[worker,cosyvoice]"; \
    /opt/tts-stream/bin/pip uninstall -y onnxruntime; \
    /opt/tts-stream/bin/pip install "onnxruntime-gpu>=1.18"

# ---------------------------------------------------------------- GPU: runtime -------------------
FROM ${CUDA_IMAGE} AS gpu
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="tts-stream" \
      org.opencontainers.image.description="Kafka stream processor for text-to-speech (GPU: CosyVoice engine)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.vendor="tts-stream developers"
ENV DEBIAN_FRONTEND=noninteractive
# python3 must match the one the venv was built with (same base image); libsndfile/ffmpeg come
# with the wheels, sox is what CosyVoice's front end shells out to for some formats.
RUN set -eux; apt-get update; \
    apt-get install -y --no-install-recommends python3 libgomp1 sox; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --system --gid 10001 tts; \
    useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin tts
COPY --from=gpu-venv /opt/tts-stream /opt/tts-stream
COPY --from=cosyvoice-src /opt/src/CosyVoice /opt/cosyvoice/
ENV PATH=/opt/tts-stream/bin:$PATH \
    PYTHONPATH=/opt/cosyvoice:/opt/cosyvoice/third_party/Matcha-TTS \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    TTS_ENGINE=cosyvoice \
    TTS_DEVICE=cuda \
    TTS_MODEL_DIR=/models \
    TTS_HTTP_HOST=0.0.0.0 \
    TTS_HTTP_PORT=8080
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
# The model load takes minutes: a long start period, after which the loop must stay live.
HEALTHCHECK --interval=15s --timeout=5s --start-period=900s --retries=4 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/livez' % os.environ.get('TTS_HTTP_PORT', '8080'), timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["tts-stream"]
CMD ["worker"]
