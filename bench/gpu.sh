#!/usr/bin/env bash
# Everything that needs a GPU, in one command: the GPU tests, then the engine benchmarks, printed as tables.
#
#   bash bench/gpu.sh            # from the repository root, on a host with one CUDA GPU
#
# Offline and self-contained: the models are random (a tiny one for the tests, Qwen2.5-0.5B's configuration
# for the benchmarks) and the tokenizer is built here, so nothing is downloaded and no converted model is
# needed. Needs python3 with torch (2.11+, CUDA), transformers 5.x and pytest; the project's Django side
# is not used. Budget: under 8 minutes on one H100/H200 (each step has its own timeout).
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
PY=${PY:-python3}
[ -x .venv/bin/python ] && "$PY" -c 'import torch' 2>/dev/null || PY=.venv/bin/python
status=0
step() {  # step NAME SECONDS COMMAND...: run with a limit, keep going on failure, remember it
  local name=$1 limit=$2; shift 2
  echo; echo "== $name ($(date +%T), limit ${limit}s)"
  local start=$SECONDS
  timeout "$limit" "$@" || { echo "!! $name failed (exit $?)"; status=1; }
  echo "== $name took $((SECONDS - start))s"
}

"$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__,
"| GPU", torch.cuda.get_device_name(0), f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")'

step "GPU tests (bf16 vs transformers, CUDA graphs on/off, prefix cache)" 200 \
  "$PY" -m pytest -q -m gpu tests/engine/test_gpu.py -p no:cacheprovider -p no:django -o addopts=""
step "engine vs transformers continuous batching, 1/16/64/256 concurrent" 240 \
  "$PY" bench/engine.py --device cuda --qwen05b --concurrency 1,16,64,256 --output 128
step "prefix cache: a 4-turn session and a shared 1,000-token system prompt" 90 \
  "$PY" bench/prefix.py --device cuda --qwen05b
exit $status
