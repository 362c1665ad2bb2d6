#!/usr/bin/env bash
# The benchmark on a lent GPU machine (H100/H200), as one command from the repository root:
#
#     bash benchmarks/gpu.sh                      # or: bash benchmarks/gpu.sh --tutorial-epochs 1
#
# Makes a 20,000-image PetImages-shaped set on the machine (all cores), then runs 3 epochs of (a) the
# tutorial's loop and (b) alexnet-tui --no-ui, and the compute ceiling, and prints the same figures as on
# CPU against the GPU targets: (b) at most 2 s of training per epoch, epoch-end stalls at most 0.1 s.
# Expect ~10 minutes, most of it (a): the tutorial decodes every JPEG in its main process, every epoch.
# Extra arguments go to benchmarks/throughput.py (--skip-tutorial, --tutorial-epochs N, --images N, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device here'; print(torch.cuda.get_device_name())"
exec python benchmarks/throughput.py --images 20000 --epochs 3 --device cuda --skip-tui --rounds 1 --jobs "$(nproc)" "$@"
