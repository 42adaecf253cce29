#!/usr/bin/env bash
# Build (once) and install mmcv with its compiled ops into a Python environment.
#
#   bash tools/build_mmcv.sh [PYTHON]        # default: .venv/bin/python
#
# PyPI has no mmcv wheel for torch 2.14, only a source distribution, and that one forces
# -std=c++17 while torch 2.14's headers need C++20. This script downloads the sdist, switches its
# C++ standard to C++20, compiles every op (CPU; plus CUDA when a GPU is visible or MMCV_CUDA=1),
# and keeps the wheel in a cache keyed by mmcv, torch, Python and device, so the next install on
# this machine (any checkout, any venv with the same torch) takes seconds instead of ~23 minutes.
#
# Environment:
#   MMCV_PACKAGE     the distribution to build (default onedl-mmcv==2.3.6, the maintained fork)
#   MMCV_CACHE_DIR   where wheels are kept (default: beside pip's own wheel cache, in
#                    $(pip cache dir)/vmamba_zoo-mmcv, so it lives as long as pip's cache does)
#   MMCV_CUDA        1: also compile the CUDA ops (needs nvcc), 0: CPU ops only (default: 1 when
#                    torch sees a GPU)
#   TORCH_CUDA_ARCH_LIST   CUDA architectures (default: those of the visible GPUs, e.g. 9.0)
#   MAX_JOBS         parallel compile jobs (default: number of cores)
#   MMCV_REBUILD=1   ignore the cached wheel
#   MMCV_SDIST       a local copy of the sdist (machines without PyPI, e.g. a GPU cluster node)
#   MMCV_NO_DEPS=1   install the wheel alone (its dependencies are already there or installed by hand)
#   MMCV_PROGRESS_EVERY   seconds between progress lines while compiling (default 30); the compiler's
#                    output goes to $MMCV_CACHE_DIR/<key>.build.log
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
PACKAGE=${MMCV_PACKAGE:-onedl-mmcv==2.3.6}
pip_cache=$("$PY" -m pip cache dir 2>/dev/null || true)   # empty when pip's cache is disabled
CACHE_ROOT=${MMCV_CACHE_DIR:-${pip_cache:-${XDG_CACHE_HOME:-$HOME/.cache}}/vmamba_zoo-mmcv}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}

if [ -z "${MMCV_CUDA:-}" ]; then
    MMCV_CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))")
fi
if [ "$MMCV_CUDA" = 1 ] && [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
    TORCH_CUDA_ARCH_LIST=$("$PY" -c "
import torch
caps = sorted({'%d.%d' % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
print(';'.join(caps))")
fi
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-}
# the wheel's compiled ops are tied to the torch build, the Python ABI and the device flavour
device=cpu
[ "$MMCV_CUDA" = 1 ] && device="cuda$(echo "$TORCH_CUDA_ARCH_LIST" | tr -cd '0-9;' | tr ';' '_')"
key=$("$PY" -c "
import sys, torch
print('${PACKAGE//==/-}-torch' + torch.__version__.replace('+', '_') + '-cp%d%d' % sys.version_info[:2] + '-$device')")
cache="$CACHE_ROOT/$key"
version=${PACKAGE##*==}

have_ops() {
    "$PY" - "$version" "$MMCV_CUDA" <<'EOF' >/dev/null 2>&1
import sys
import mmcv
from mmcv.ops import RoIAlign, nms  # noqa: F401  (the compiled ops, not stand-ins)
import mmcv._ext as ext
assert mmcv.__version__ == sys.argv[1], mmcv.__version__
if sys.argv[2] == "1":
    # run a compiled CUDA op for real (mmcv's own get_compiling_cuda_version() segfaults in a CUDA 13
    # build, while the ops are fine: nms and RoIAlign match their CPU results there)
    import torch
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0]], device="cuda")
    _, keep = nms(boxes, torch.tensor([0.9, 0.8], device="cuda"), 0.5)
    assert keep.tolist() == [0], keep
EOF
}

if have_ops && [ "${MMCV_REBUILD:-0}" != 1 ]; then
    echo "mmcv $version with compiled ops is already installed ($key)"
    exit 0
fi

wheel=$(ls "$cache"/*.whl 2>/dev/null | head -1 || true)
if [ -z "$wheel" ] || [ "${MMCV_REBUILD:-0}" = 1 ]; then
    echo "building $PACKAGE with ops ($device, $MAX_JOBS jobs); on 2 cores this takes about 23 minutes (more on a busy machine)"
    start=$SECONDS
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    "$PY" -c "import setuptools, wheel, packaging, ninja, psutil" 2>/dev/null \
        || "$PY" -m pip install -q "setuptools>=80" wheel packaging ninja psutil
    if [ -n "${MMCV_SDIST:-}" ]; then
        cp "$MMCV_SDIST" "$work"/
    else
        "$PY" -m pip download -q --no-deps --no-binary :all: "$PACKAGE" -d "$work"
    fi
    tar -xzf "$work"/*.tar.gz -C "$work"
    src=$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -1)
    # torch >= 2.10 needs C++20 (ATen's headers say so with an #error); the sdist asks for 14/17
    sed -i -E 's/(-|\/)std[=:]c\+\+1[47]/\1std=c++20/g' "$src/setup.py"
    sed -i -E 's#/std=c\+\+20#/std:c++20#g' "$src/setup.py"
    grep -q 'c++20' "$src/setup.py" || { echo "setup.py of $PACKAGE changed: no C++ standard flag to patch" >&2; exit 1; }
    # the compiler's output goes to a log kept beside the cache; every 30 s a line says how far it is
    mkdir -p "$CACHE_ROOT"
    log="$CACHE_ROOT/$key.build.log"
    echo "compiler output: $log"
    MMCV_WITH_OPS=1 FORCE_CUDA=$MMCV_CUDA "$PY" -m pip wheel -v --no-build-isolation --no-deps \
        -w "$work/dist" "$src" >"$log" 2>&1 &
    build=$!
    ticks=0
    while kill -0 "$build" 2>/dev/null; do
        sleep 1
        ticks=$((ticks + 1))
        if [ $((ticks % ${MMCV_PROGRESS_EVERY:-30})) = 0 ]; then
            "$PY" tools/build_progress.py "$log" $((SECONDS - start)) || true
        fi
    done
    if ! wait "$build"; then
        echo "building mmcv failed after $((SECONDS - start)) s; the end of $log:" >&2
        tail -n 40 "$log" >&2
        exit 1
    fi
    mkdir -p "$cache.tmp" && rm -f "$cache.tmp"/*.whl
    cp "$work"/dist/*.whl "$cache.tmp"/
    rm -rf "$cache" && mv "$cache.tmp" "$cache"
    wheel=$(ls "$cache"/*.whl | head -1)
    echo "built $(basename "$wheel") in $((SECONDS - start)) s; cached in $cache"
fi
"$PY" -m pip install -q --force-reinstall --no-deps "$wheel"
[ "${MMCV_NO_DEPS:-0}" = 1 ] || "$PY" -m pip install -q "$wheel"   # its dependencies (mmengine, opencv, ...)
have_ops || { echo "mmcv installed from $wheel but its compiled ops do not import" >&2; exit 1; }
echo "mmcv $version with compiled ops installed from $wheel"
