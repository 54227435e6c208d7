#!/usr/bin/env bash
# One prepared check for a GPU host: tests and benchmarks, everything written to $OUT.
# The host has JAX (with CUDA), Flax, Optax and imageio but no network; run from the repo root:
#   OUT=/some/folder PYTHONPATH=. bash benchmarks/gpu_check.sh
# Every contender runs on the GPU: the JAX ones and Keras (JAX backend) on JAX's default device,
# PyTorch on CUDA; a contender whose package is missing (keras-mdn-layer, torch) is skipped and
# environment.txt says so, and torch without CUDA is skipped, never timed on the CPU.
# Each step has its own time limit so one slow step cannot eat the whole lease; together they
# stay under 9.5 minutes (a device command may run 10). On a 2-core CPU the likelihood step times out.
set -u
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:-.}
export PYTHONUNBUFFERED=1
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  python -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__); print(jax.devices())"
  KERAS_BACKEND=jax python -c "import keras, keras_mdn_layer; print('keras', keras.__version__, keras.backend.backend())" 2>&1 | tail -1
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tail -1
} > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"

# Tests that do not need scipy/hypothesis run everywhere; the rest skip themselves if missing.
timeout 130 python -m pytest -q -x tests/test_train.py tests/test_render.py tests/test_model.py \
  tests/test_fastgrad.py -k "not peak_memory" > "$OUT/tests.txt" 2>&1
echo "tests exit $?" | tee -a "$OUT/tests.txt"; tail -3 "$OUT/tests.txt"

timeout 150 python benchmarks/train_throughput.py --repeats 5 > "$OUT/train_throughput.txt" 2>&1
echo "train benchmark exit $?"; tail -26 "$OUT/train_throughput.txt"

timeout 60 python benchmarks/step_leads.py --repeats 3 > "$OUT/step_leads.txt" 2>&1
echo "step leads exit $?"; tail -40 "$OUT/step_leads.txt"

timeout 50 python benchmarks/likelihood_throughput.py > "$OUT/likelihood_throughput.txt" 2>&1
echo "likelihood benchmark exit $?"; tail -30 "$OUT/likelihood_throughput.txt"

timeout 70 python benchmarks/render_throughput.py > "$OUT/render_throughput.txt" 2>&1
echo "render benchmark exit $?"; tail -26 "$OUT/render_throughput.txt"

# M stacked models against M sequential fits (issue 14): the gain is on accelerators. One timed
# epoch per fit, one repeat; each line is printed as it is measured, so a timeout keeps the rest.
timeout 110 python benchmarks/stacked_throughput.py --epochs 2 --repeats 1 > "$OUT/stacked_throughput.txt" 2>&1
echo "stacked benchmark exit $?"; tail -14 "$OUT/stacked_throughput.txt"
