#!/usr/bin/env bash
# Creates build/pyenv (a Python virtual environment) with the packages the HTTP integration tests
# (tests/http) use: the official `openai` client (which brings httpx). Idempotent: does nothing
# when the environment already imports the pinned version. Extra argument: the venv directory.
set -euo pipefail
cd "$(dirname "$0")/.."
OPENAI_VERSION=3.51.0
VENV=${1:-build/pyenv}
PYTHON=${PYTHON:-python3}

if [ -x "$VENV/bin/python" ] &&
  "$VENV/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_VERSION')" \
    2>/dev/null; then
  exit 0
fi
mkdir -p "$(dirname "$VENV")"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
  "openai==$OPENAI_VERSION"
"$VENV/bin/python" -c "import openai; print('kiln: python env ready:', openai.__version__)"
