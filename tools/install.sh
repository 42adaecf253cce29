#!/usr/bin/env bash
# Fresh-machine install: a virtual environment in .venv with torch 2.14.1 + torchvision 0.29.1
# (the tested pair) and this repository (vmamba_zoo + ssm_kernels, editable) with its test extras.
# Idempotent: re-running it reuses the venv and pip's cache.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1 -e ".[test]"
.venv/bin/python -c "import timm, vmamba_zoo, ssm_kernels; print('vmamba_zoo', vmamba_zoo.__version__, 'ready:', len(vmamba_zoo.list_models()), 'models')"
