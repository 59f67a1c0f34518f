#!/usr/bin/env bash
# One GPU session's checks, in one command: the GPU check, then the GPU benchmark.
#
#   experiments/gpu_session.sh OUT_DIR [WHEEL_DIR]
#
# For a machine that has Python, numpy, CuPy, scipy, scikit-learn and matplotlib but neither
# chainer nor this package installed: chainer's wheel (pure Python; build it where pip works with
# `PIP_CONSTRAINT=<file with "setuptools<81"> pip wheel --no-deps chainer==7.8.1 -w WHEEL_DIR`)
# is installed from WHEEL_DIR into a scratch folder, and the package runs from this checkout.
# Each part has its own time limit, so one that hangs leaves the other's numbers. Writes
# OUT_DIR/{gpu_check,bench_gpu}.{log,json} and OUT_DIR/nvidia-smi.txt; exit status 1 when a part
# failed or ran out of time.
set -u
out=${1:?usage: experiments/gpu_session.sh OUT_DIR [WHEEL_DIR]}
wheels=${2:-.whl}
python=${GPU_PYTHON:-python3}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"

if ! "$python" -c 'import importlib.util, sys; sys.exit(not importlib.util.find_spec("chainer"))'
then
    wheel=$(ls "$wheels"/chainer-*.whl 2>/dev/null | head -1)
    [ -n "$wheel" ] || { echo "chainer is not installed and $wheels holds no chainer-*.whl:" \
        "build it as this script's header says" >&2; exit 2; }
    site=$(mktemp -d)
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
        "$wheel" || exit 2
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi > "$out/nvidia-smi.txt" 2>&1

status=0
part() {  # part NAME SECONDS SCRIPT ARGS...
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit} s)"
    local start=$SECONDS
    timeout "$limit" "$python" "$@" --json "$out/$name.json" > "$out/$name.log" 2>&1
    local rc=$?
    cat "$out/$name.log"
    echo "== $name: exit $rc after $((SECONDS - start)) s"
    [ "$rc" -eq 0 ] || status=1
}
# GPU_SESSION_ARGS='--device @numpy --quick' is the dry run on a machine without a GPU.
part gpu_check "${GPU_CHECK_LIMIT:-300}" "$root/experiments/gpu_check.py" --device @cupy:0 \
    ${GPU_SESSION_ARGS:-}
part bench_gpu "${BENCH_GPU_LIMIT:-300}" "$root/experiments/bench_gpu.py" --device @cupy:0 \
    ${GPU_SESSION_ARGS:-}
exit $status
