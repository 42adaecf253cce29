#!/usr/bin/env bash
# Fresh-machine install: a virtual environment in .venv with torch 2.14.1 + torchvision 0.29.1
# (the tested pair), this repository (vmamba_zoo + ssm_kernels, editable) with its test extras, and
# the OpenMMLab stack for detection and segmentation (mmengine, mmcv with its compiled ops, mmdet,
# mmseg: the maintained onedl-* releases). mmcv's ops are compiled once per machine (about 23 minutes
# on 2 cores; tools/build_mmcv.sh) and the wheel cached beside pip's wheel cache.
# Idempotent: re-running it reuses the venv, the mmcv wheel and pip's cache (seconds).
# INSTALL_MM=0 skips the OpenMMLab stack (the timm models alone).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1 -e ".[test]"
if [ "${INSTALL_MM:-1}" != 0 ]; then
    bash tools/build_mmcv.sh .venv/bin/python
    .venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1 -e ".[test,mm]"
    .venv/bin/python -c "import mmcv, mmdet, mmseg, vmamba_zoo.mm; from mmcv.ops import RoIAlign, nms; print('mmcv', mmcv.__version__, 'mmdet', mmdet.__version__, 'mmseg', mmseg.__version__)"
fi
.venv/bin/python -c "import timm, vmamba_zoo, ssm_kernels; print('vmamba_zoo', vmamba_zoo.__version__, 'ready:', len(vmamba_zoo.list_models()), 'models')"
