#!/usr/bin/env bash
# The GPU figures issues 3 and 4 ask for (10000 x 10000 scene, batched, with autocast), as
# one prepared command for the device machine (../.library/device/README.md): its image
# has PyTorch with CUDA but not rasterio or shapely, and nothing can be fetched there.
#
#   1. here, once:  bash benchmarks/gpu_check.sh fetch
#      (wheels for the device's Python 3.12 into .gpu-wheels/, which git ignores: about 38 MB)
#   2. device run:  command "bash benchmarks/gpu_check.sh run", carry [".gpu-wheels"],
#      timeout_s 540 (building the 10000^2 scene takes about a minute there)
#   3. the figures: $OUT/gpu_check.json, one bench_scene.py --json document per run, in order
#
# Test the script on the CPU with a small scene:
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_SIZE=1024 OUT=/tmp/gc bash benchmarks/gpu_check.sh run
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.gpu-wheels

case "${1:-}" in
fetch)
    python -m pip download --quiet --only-binary=:all: --no-deps --implementation cp --python-version 3.12 \
        --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d "$WHEELS" \
        "rasterio==1.4.4" affine cligj click-plugins "shapely>=2.0"
    ls -la "$WHEELS"
    ;;
run)
    OUT=${OUT:-/tmp/gpu_check}
    DEVICE=${GPU_CHECK_DEVICE:-cuda}
    SIZE=${GPU_CHECK_SIZE:-10000}
    mkdir -p "$OUT"
    export PYTHONUNBUFFERED=1
    PY=${PYTHON:-python3}
    if ! "$PY" -c "import rasterio, shapely" 2>/dev/null; then
        "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" rasterio shapely
    fi
    if ! "$PY" -c "import geocloud.cli" 2>/dev/null; then
        "$PY" -m pip install --quiet --no-deps --no-build-isolation -e .
    fi
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$OUT/device.txt"
    nproc | tee -a "$OUT/device.txt"
    all=mask,score,alpha,reflectance,clear,stats
    for spec in "mask,score,stats bf16" "mask,score,stats off" "$all bf16" "$all off"; do
        set -- $spec
        echo "== products $1, autocast $2" | tee -a "$OUT/log.txt"
        "$PY" benchmarks/bench_scene.py --size "$SIZE" --model cam --products "$1" --no-floor --json \
            --cache-dir "$OUT/../gpu_check_scenes" -- --device "$DEVICE" --autocast "$2" \
            | tee -a "$OUT/gpu_check.json"
    done
    ;;
*)
    echo "usage: bash benchmarks/gpu_check.sh fetch|run" >&2
    exit 2
    ;;
esac
