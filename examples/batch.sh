#!/usr/bin/env bash
# Ask the same question about every example document, one JSON line per document.
# Re-run with --resume after an interruption: documents already answered are skipped.
set -euo pipefail
cd "$(dirname "$0")"
# scoutdoc from the PATH (an activated .venv), else the project's own .venv
scoutdoc=$(command -v scoutdoc || echo ../.venv/bin/scoutdoc)
"$scoutdoc" batch contract.pdf contract.docx meeting.vtt \
  --question "List the dates mentioned and what happens on each." \
  --max-tokens 128 --out batch-results.jsonl --resume "$@"
