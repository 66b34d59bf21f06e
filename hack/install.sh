#!/usr/bin/env bash
# Creates the virtual environment and installs slm-operator with every extra.
# llama-cpp-python compiles llama.cpp from source (minutes on 2 cores): its wheel is built once into
# $SLM_CACHE_HOME/wheels/llama-cpp-python-<version>/ and reused by every later install.
set -euo pipefail
venv=${1:-.venv}
cache=${SLM_CACHE_HOME:-$HOME/.cache/slm-operator}
llama_version=$(sed -n 's/.*"llama-cpp-python==\([^"]*\)".*/\1/p' pyproject.toml)
wheels="$cache/wheels/llama-cpp-python-$llama_version"

if [ ! -x "$venv/bin/python" ]; then
  echo ">> creating $venv"
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip wheel

if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo ">> building llama-cpp-python $llama_version wheel once into $wheels (compiles llama.cpp; several minutes)"
  mkdir -p "$wheels"
  "$venv/bin/python" -m pip wheel --no-deps -w "$wheels" "llama-cpp-python==$llama_version"
fi

echo ">> installing slm-operator[operator,runtime,gateway,models,dev]"
"$venv/bin/python" -m pip install --quiet --find-links "$wheels" -e ".[operator,runtime,gateway,models,dev]"
