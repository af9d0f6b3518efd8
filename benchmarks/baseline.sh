#!/usr/bin/env bash
# The shell entrypoint people write today, done the way a competent user would: the baseline
# that benchmarks/bench.py measures ollama-preloader against. It runs in the stock Ollama image,
# which has bash but no curl, so its HTTP requests go through bash's /dev/tcp.
#
#   OLLAMA_PRELOAD_MODELS="llama3.2,nomic-embed-text" ./baseline.sh
#
# What it does, and what it cannot do (by design: this is the approach being measured):
# - starts `ollama serve` in the background and polls `ollama list` once a second until it answers;
# - pulls every model, one after the other (a failed pull is reported, not fatal: with `set -e`
#   it would crash-loop the container);
# - then loads each model once with keep_alive -1 (a JSON number: Ollama refuses the string "-1"),
#   through /api/embed for embedding models, recognised by their name, /api/generate otherwise;
# - then waits on `ollama serve`, forwarding SIGTERM/SIGINT to it. Nothing watches the models:
#   one that is evicted or un-pinned stays that way.
set -u

IFS=', ' read -r -a models <<< "${OLLAMA_PRELOAD_MODELS:-}"

# OLLAMA_HOST as host:port (no scheme), the common case; Ollama's default otherwise.
address="${OLLAMA_HOST:-127.0.0.1:11434}"
address="${address#http://}"
host="${address%:*}"
port="${address##*:}"
case "$host" in "" | 0.0.0.0) host=127.0.0.1 ;; esac

ollama serve &
serve_pid=$!
stop() {
  kill -TERM "$serve_pid" 2>/dev/null
  wait "$serve_pid"
  exit 0
}
trap stop TERM INT

until ollama list >/dev/null 2>&1; do
  if ! kill -0 "$serve_pid" 2>/dev/null; then
    echo "baseline: ollama serve exited" >&2
    exit 1
  fi
  sleep 1
done
echo "baseline: ollama is up"

# POST a JSON body; succeeds when Ollama answers 200. No curl in the image: plain HTTP/1.1 over
# /dev/tcp, with Connection: close so the body ends when the server closes the socket.
post() {
  local path=$1 body=$2 status
  exec 3<>"/dev/tcp/$host/$port" || return 1
  printf 'POST %s HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
    "$path" "$host" "$port" "${#body}" "$body" >&3
  read -r _ status _ <&3
  cat <&3 >/dev/null
  exec 3<&-
  [ "$status" = 200 ]
}

for model in "${models[@]}"; do
  echo "baseline: pulling $model"
  ollama pull "$model" >/dev/null || echo "baseline: pull of $model failed" >&2
done

for model in "${models[@]}"; do
  case "$model" in
    *embed* | *minilm* | *bge* | *e5-*)
      post /api/embed "{\"model\":\"$model\",\"input\":[],\"keep_alive\":-1}" ;;
    *)
      post /api/generate "{\"model\":\"$model\",\"keep_alive\":-1}" ;;
  esac && echo "baseline: loaded $model" || echo "baseline: load of $model failed" >&2
done
echo "baseline: preloading done"

wait "$serve_pid"
