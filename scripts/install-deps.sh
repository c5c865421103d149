#!/usr/bin/env bash
# Installs kiln's build and test dependencies from Debian packages (Debian 12 "bookworm").
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  build-essential cmake ninja-build ccache pkg-config git python3 python3-venv curl \
  libopenmpi-dev openmpi-bin \
  libboost1.81-dev libboost-json1.81-dev \
  libyaml-cpp-dev libpcre2-dev libcli11-dev libspdlog-dev libfmt-dev \
  libgtest-dev libgmock-dev libbenchmark-dev >/dev/null
echo "kiln: dependencies installed"
