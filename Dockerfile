# ollama-preloader on the official Ollama image: the supervisor is the entrypoint (under tini),
# `ollama serve` its child.
#
#   docker build -t ollama-preloader .
#   docker build --build-arg PRELOAD_MODELS="llama3.2,nomic-embed-text" -t my-ollama .
#
# The second form bakes the models into the image (stage `baked`, see README "Docker").

# The Ollama release this image is built and tested on. Ubuntu 24.04, /bin/ollama,
# OLLAMA_HOST=0.0.0.0:11434.
ARG OLLAMA_VERSION=0.32.15

FROM ollama/ollama:${OLLAMA_VERSION} AS system
# Python from the distribution for the supervisor's own venv, and tini as PID 1 so orphans are
# reaped and signals forwarded. Versions follow the pinned base image's Ubuntu release; pinning
# each package would block its security updates on rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv tini \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

FROM system AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ollama_preloader ./ollama_preloader
COPY scripts/install-venv ./scripts/install-venv
RUN ["/src/scripts/install-venv", "/src", "/opt/ollama-preloader"]

FROM system AS app
# One layer for the app: the finished venv, without the sources, wheels or pip caches.
COPY --from=build /opt/ollama-preloader /opt/ollama-preloader
ENV PATH=/opt/ollama-preloader/bin:$PATH
# 11434: Ollama's API. 11435: the supervisor's /livez, /readyz, /status, /metrics.
EXPOSE 11434 11435
# The model store is /root/.ollama; mount a volume there (docker-compose.yml does). It is not
# declared with VOLUME so that a derived image can still bake models into it.
# start-period: pulls and loads of large models take minutes; failures before then do not count,
# and the first success ends it early. No --start-interval: Docker Engine before 25 rejects the
# flag and the build fails; compose's start_interval (or a Kubernetes probe) gives the fast first
# check instead.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30m --retries=3 \
    CMD ["ollama-preloader", "health"]
ENTRYPOINT ["/usr/bin/tini", "--", "/opt/ollama-preloader/bin/ollama-preloader"]
CMD ["run"]

# Build-time baking: with PRELOAD_MODELS set, record those models in
# /etc/ollama-preloader/baked-models.txt (one per line, the models-file format) and pull them
# into the image (a temporary `ollama serve`, no loads). The file is the default list: the
# user's OLLAMA_PRELOAD_MODELS or PRELOADER_MODELS_FILE replaces it, and setting both is still
# an error. Without PRELOAD_MODELS this stage adds nothing. The key `ollama serve` generates is
# removed so that images do not share one.
FROM app AS baked
ARG PRELOAD_MODELS=""
# Where the bake's temporary `ollama serve` listens: loopback only, and movable, so that a
# `docker build --network host` beside an Ollama that already holds 11434 can bake on another
# port. The image's own OLLAMA_HOST (0.0.0.0:11434) is unchanged.
ARG BAKE_OLLAMA_HOST=127.0.0.1:11434
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN if [ -n "$PRELOAD_MODELS" ]; then \
        mkdir -p /etc/ollama-preloader \
        && tr ',' '\n' <<<"$PRELOAD_MODELS" | sed 's/^ *//; s/ *$//; /^$/d' \
            > /etc/ollama-preloader/baked-models.txt \
        && OLLAMA_HOST="$BAKE_OLLAMA_HOST" ollama-preloader pull \
        && rm -f /root/.ollama/id_ed25519 /root/.ollama/id_ed25519.pub; \
    fi
