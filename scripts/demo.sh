#!/usr/bin/env bash
# Fresh machine → a running kiln server: installs dependencies, builds, generates the demo model
# (random weights, real BPE vocabulary and chat template), starts the OpenAI-compatible server on
# http://127.0.0.1:${KILN_PORT:-8080}, sends it one chat request with curl, and keeps serving
# until Ctrl-C (KILN_DEMO_ONESHOT=1: stop after the request).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh -DKILN_BUILD_TESTS=OFF
if [ ! -f models/demo/model.gguf ]; then
  ./build/launcher/kiln make-model --preset tiny --dtype bf16 --seed 7 --out models/demo
fi
PORT="${KILN_PORT:-8080}"
./build/launcher/kiln serve --model models/demo/model.gguf --served-model-name demo \
  --port "$PORT" &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  if curl -sf "http://127.0.0.1:$PORT/health" >/dev/null; then break; fi
  if ! kill -0 $SERVER 2>/dev/null; then echo "kiln: the server did not start" >&2; exit 1; fi
  sleep 0.5
done
echo "--- POST /v1/chat/completions"
curl -sS "http://127.0.0.1:$PORT/v1/chat/completions" -H 'Content-Type: application/json' -d '{
  "model": "demo", "max_tokens": 32, "temperature": 0.8, "seed": 1,
  "messages": [{"role": "user", "content": "Tell me about the river."}]}'
echo
if [ "${KILN_DEMO_ONESHOT:-0}" = "1" ]; then exit 0; fi
echo "--- serving on http://127.0.0.1:$PORT (OpenAI API: /v1/completions, /v1/chat/completions); Ctrl-C stops"
trap - EXIT
wait $SERVER
