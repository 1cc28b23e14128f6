#!/usr/bin/env bash
# Creates .venv and installs scoutdoc into it. PyTorch's CPU build goes first: resolved on its own,
# a plain `torch` requirement pulls a multi-GB CUDA build. Pass extras as the first argument ("test").
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
if [ -n "$extras" ]; then
  .venv/bin/python -m pip install -q -e ".[$extras]"
else
  .venv/bin/python -m pip install -q -e .
fi
