#!/usr/bin/env bash
# The test command: installs everything the suite needs into .venv, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
exec .venv/bin/python -m pytest -q "$@"
