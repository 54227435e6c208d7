#!/usr/bin/env bash
# One prepared check for a GPU host: tests and benchmarks, everything written to $OUT.
# The host has JAX (with CUDA), Flax, Optax and imageio but no network; run from the repo root:
#   OUT=/some/folder PYTHONPATH=. bash benchmarks/gpu_check.sh
# Each step has its own time limit so one slow step cannot eat the whole lease; together they
# stay under 9 minutes (a device command may run 10). On a 2-core CPU the likelihood step times out.
set -u
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:-.}
export PYTHONUNBUFFERED=1
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  python -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__); print(jax.devices())"
} > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"

# Tests that do not need scipy/hypothesis run everywhere; the rest skip themselves if missing.
timeout 180 python -m pytest -q -x tests/test_train.py tests/test_render.py tests/test_model.py \
  -k "not peak_memory" > "$OUT/tests.txt" 2>&1
echo "tests exit $?" | tee -a "$OUT/tests.txt"; tail -3 "$OUT/tests.txt"

timeout 150 python benchmarks/train_throughput.py --repeats 5 > "$OUT/train_throughput.txt" 2>&1
echo "train benchmark exit $?"; tail -12 "$OUT/train_throughput.txt"

timeout 90 python benchmarks/likelihood_throughput.py > "$OUT/likelihood_throughput.txt" 2>&1
echo "likelihood benchmark exit $?"; tail -30 "$OUT/likelihood_throughput.txt"

timeout 100 python benchmarks/render_throughput.py > "$OUT/render_throughput.txt" 2>&1
echo "render benchmark exit $?"; tail -20 "$OUT/render_throughput.txt"
