#!/usr/bin/env bash
# Train on several GPUs of one or more hosts with torchrun (mmengine's own distributed path).
#
#   bash tools/dist_train.sh CONFIG GPUS [tools/train.py options...]
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 bash tools/dist_train.sh CONFIG 8   # on each host
#
# PYTHON defaults to the repository's .venv/bin/python when it exists; PORT to 29500.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
if [ $# -lt 2 ]; then
    echo "usage: bash tools/dist_train.sh CONFIG GPUS [train.py options]" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
shift 2
exec bash "$HERE/_torchrun.sh" "$GPUS" "$HERE/train.py" "$CONFIG" --launcher pytorch "$@"
