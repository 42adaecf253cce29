#!/usr/bin/env bash
# What dist_train.sh and dist_test.sh share: start SCRIPT once per GPU with torchrun.
#
#   bash tools/_torchrun.sh GPUS SCRIPT [script arguments...]
#
# Several hosts: NNODES, NODE_RANK, MASTER_ADDR (run on each); PORT defaults to 29500. PYTHON defaults
# to the repository's .venv/bin/python when it exists.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
GPUS=$1
SCRIPT=$2
shift 2
PYTHON=${PYTHON:-$([ -x "$HERE/../.venv/bin/python" ] && echo "$HERE/../.venv/bin/python" || echo python)}
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${PORT:-29500}" --nproc_per_node="$GPUS" \
    "$SCRIPT" "$@"
