"""Samples/s of `mdn_jax.fit` on the reference workload, from whichever mdn_jax is on PYTHONPATH.

Used to compare two versions of the library (before/after a change) as separate processes:

    PYTHONPATH=OLD_CHECKOUT python benchmarks/fit_speed.py 200 6
    PYTHONPATH=.            python benchmarks/fit_speed.py 200 6

Prints one JSON line: the median samples/s over the epochs after the first (which compiles) and
the final training loss (equal losses show both versions trained the same model).
"""

import json
import statistics
import sys

import mdn_jax
from mdn_jax import data

batch = int(sys.argv[1])
epochs = int(sys.argv[2])
images = data.demo_images(count=5, size=128)
xs, ys = data.image_pairs(images)
mc = mdn_jax.ModelConfig(
    in_features=2, out_features=3, hidden=(100, 100, 100, 100, 100, 50), components=10
)
tc = mdn_jax.TrainConfig(epochs=epochs, batch_size=batch, learning_rate=1e-3, seed=0)
result = mdn_jax.fit(xs, ys, model_config=mc, train_config=tc)
sps = [r["samples_per_second"] for r in result.history[1:]]
print(
    json.dumps(
        {
            "batch": batch,
            "median_samples_per_second": statistics.median(sps),
            "final_loss": result.history[-1]["loss"],
        }
    )
)
