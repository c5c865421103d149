#!/usr/bin/env bash
# Fresh machine → a running kiln: installs dependencies, builds, generates the demo model
# (random weights, real BPE vocabulary) and generates text from it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh -DKILN_BUILD_TESTS=OFF
if [ ! -f models/demo/model.gguf ]; then
  ./build/launcher/kiln make-model --preset tiny --dtype bf16 --seed 7 --out models/demo
fi
./build/launcher/kiln generate --model models/demo/model.gguf --chat \
  --prompt "${KILN_PROMPT:-Tell me about the river.}" --max-tokens 48 --temperature 0.8 --seed 1
