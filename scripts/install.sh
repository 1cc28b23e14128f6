#!/usr/bin/env bash
# Creates .venv and installs scoutdoc into it. PyTorch's CPU build goes first: resolved on its own,
# a plain `torch` requirement pulls a multi-GB CUDA build. Pass extras as the first argument ("test").
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
say() { echo "install.sh: $*" >&2; }
[ -x .venv/bin/python ] || { say "creating .venv"; python3 -m venv .venv; }
.venv/bin/python -m pip install -q --upgrade pip
say "installing PyTorch (CPU build)"
.venv/bin/python -m pip install -q "torch==2.13.0"
if [ -n "$extras" ]; then
  # Not quiet: llama-cpp-python has no wheel for most machines and compiles llama.cpp from source.
  say "installing scoutdoc with the '$extras' extra; the first time, pip compiles llama-cpp-python"
  say "(used by the remote-engine tests) from source: about 20 minutes on 2 cores, with little output"
  .venv/bin/python -m pip install -e ".[$extras]"
else
  say "installing scoutdoc"
  .venv/bin/python -m pip install -q -e .
fi
say "done: .venv/bin/scoutdoc (or 'source .venv/bin/activate', then scoutdoc)"
