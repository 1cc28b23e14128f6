#!/usr/bin/env bash
# The test command: installs everything the suite needs into .venv, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
echo "test.sh: running the test suite (several minutes; tests needing ../shared/corpus skip without it)" >&2
exec .venv/bin/python -m pytest -q "$@"
