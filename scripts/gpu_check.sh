#!/usr/bin/env bash
# GPU check (CUDA machine only; CI never runs it): attention backends and the tiered KV cache on
# the GPU against CPU results for the tiny model, then Scout-shaped prefill throughput and
# host->device KV streaming. Installs the project (and flash-attn when a wheel is available) into
# .venv if needed. Usage: bash scripts/gpu_check.sh [--tokens 32768] [--stream-tokens 262144]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
if [ ! -x "$PY" ]; then
    python3 -m venv .venv
    "$PY" -m pip install -q -e ".[test]"
fi
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA device visible to PyTorch; run this on a machine with an NVIDIA GPU and a CUDA build of torch" >&2
    exit 2
fi
"$PY" -c "import flash_attn" 2>/dev/null || "$PY" -m pip install -q --no-build-isolation "flash-attn>=2.6" 2>/dev/null \
    || echo "gpu_check: flash-attn not installed (no prebuilt wheel here); checking the PyTorch backends only"
exec timeout 900 "$PY" scripts/gpu_check.py "$@"
