#!/usr/bin/env bash
# Prepare a fresh machine: system headers for building Ollama, and a virtualenv outside the
# clone (keyed by pyproject.toml, so an unchanged project reuses it) with teambot installed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:?usage: bootstrap.sh VENV_DIR}"

# Ollama's llama.cpp includes nlohmann/json and stb from its vendor/ folder, which Go module
# downloads leave out; Debian packages provide them (miniaudio.h comes from PyPI at build time).
if [ ! -f /usr/include/nlohmann/json_fwd.hpp ] || [ ! -f /usr/include/stb/stb_image.h ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq nlohmann-json3-dev libstb-dev >/dev/null
fi
command -v go >/dev/null || { echo "Go is needed to build Weaviate and Ollama (https://go.dev/dl)"; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if [ ! -f "$VENV/.teambot-installed" ]; then
  "$VENV/bin/pip" install -q -U pip
  "$VENV/bin/pip" install -q -e ".[devmodel,train,test]"
  touch "$VENV/.teambot-installed"
else
  # Same dependencies: only (re)link this checkout.
  "$VENV/bin/pip" install -q --no-deps -e .
fi
