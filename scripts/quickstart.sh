#!/usr/bin/env bash
# Set up, then label the example corpus with the embedded default models (no GPU, no model hub).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec freeal-ray example --folder example --run "$@"
