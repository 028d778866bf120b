#!/usr/bin/env bash
# The throughput benchmark on the first machine with a CUDA GPU, as one script (about 10 minutes):
#   bash benchmarks/gpu_throughput.sh [WORKERS]     from a checkout with the package installed (pip install -e .)
# Prints the machine, then three runs of benchmarks/throughput.py: fp32 for both variants, ours in bf16 autocast
# (its GPU default) at the default batch, and at batch 64. Each run's output also goes to $OUT (default
# runs/gpu_throughput), one file each, so a machine lent for a few minutes hands back every figure.
set -euo pipefail
cd "$(dirname "$0")/.."
workers=${1:-8}
out=${OUT:-runs/gpu_throughput}
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'error: no CUDA device visible to torch')"
mkdir -p "$out"
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    lscpu | grep -E "^Model name|^CPU\(s\)"
    python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
} | tee "$out/machine.txt"
python benchmarks/throughput.py --fp32 --workers "$workers" | tee "$out/fp32.txt"
python benchmarks/throughput.py --workers "$workers" | tee "$out/bf16.txt"
python benchmarks/throughput.py --workers "$workers" --batch-size 64 --steps 24 | tee "$out/bf16_batch64.txt"
