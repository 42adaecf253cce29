#!/usr/bin/env bash
# Evaluate on several GPUs with torchrun:  bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py options...]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
if [ $# -lt 3 ]; then
    echo "usage: bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py options]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
shift 3
exec bash "$HERE/_torchrun.sh" "$GPUS" "$HERE/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
