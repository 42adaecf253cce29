#!/usr/bin/env bash
# The CPU end-to-end check of detection and segmentation, with the stock tools only:
# generate the toy datasets, evaluate the untrained model, train, evaluate the trained model.
#
#   bash tools/toy_end_to_end.sh [det|seg|both]        (default: both)
#
# The schedules are the toy configs' own (their max_iters; edit them there, the lr schedule follows).
# The untrained number comes from the same initial weights (seed 0): one iteration at lr 0 writes
# them to a checkpoint, which tools/test.py evaluates like any other. Logs and checkpoints go to
# work_dirs/toy_{det,seg}{_untrained,}; the last lines of each evaluation are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
WHAT=${1:-both}
[ -f data/toy/coco/annotations/instances_val.json ] || "$PY" tools/make_toy_datasets.py --out data/toy

run() {  # name config metric-pattern
    local name=$1 config=$2 pattern=$3
    local base=work_dirs/toy_$name
    rm -rf "${base}_untrained" "$base"
    mkdir -p work_dirs
    "$PY" tools/train.py "$config" --work-dir "${base}_untrained" \
        --cfg-options train_cfg.max_iters=1 train_cfg.val_interval=1000000 default_hooks.checkpoint.interval=1 \
        optim_wrapper.optimizer.lr=0.0 > "${base}_untrained.train.log" 2>&1
    "$PY" tools/test.py "$config" "${base}_untrained/iter_1.pth" --work-dir "${base}_untrained" \
        > "${base}_untrained.test.log" 2>&1
    echo "== $name, untrained (same initial weights):"
    grep -E "$pattern" "${base}_untrained.test.log" | tail -1
    local start=$SECONDS
    "$PY" tools/train.py "$config" --work-dir "$base" > "$base.train.log" 2>&1
    local last
    last=$(ls "$base"/iter_*.pth | sort -V | tail -1)
    echo "== $name, trained to $(basename "$last") in $((SECONDS - start)) s (training + one evaluation):"
    "$PY" tools/test.py "$config" "$last" --work-dir "$base" > "$base.test.log" 2>&1
    grep -E "$pattern" "$base.test.log" | tail -1
}

if [ "$WHAT" = det ] || [ "$WHAT" = both ]; then
    run det configs/mmdet/toy/mask-rcnn_vmamba-t-mini_fpn_toy-shapes.py "coco/bbox_mAP"
fi
if [ "$WHAT" = seg ] || [ "$WHAT" = both ]; then
    run seg configs/mmseg/toy/upernet_vmamba-t-mini_toy-shapes-128x128.py "mIoU"
fi
