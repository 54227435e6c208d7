"""Calibration of the demo's MDN on pixels it never saw: CRPS, PIT histogram and coverage.

Trains the `mdn-jax demo` model (five built-in 128x128 images, 10 joint components, batch 200,
Adam 1e-3) on 90% of the pixel positions, chosen with a fixed seed, and scores the predicted
colour distribution on the other 10% (every image's colour at each held-out position):

    python examples/calibration_demo.py --out runs/calibration      # about 2-3 minutes on 2 cores

It writes `calibration.json` (`mdn_jax.calibration_metrics`) and `calibration.png` (the PIT
histogram per colour channel and the central-interval coverage against the nominal level).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import mdn_jax
from mdn_jax import data, media, runs


def held_out_split(height: int, width: int, share: float, seed: int):
    """Boolean mask over the `height * width` positions: True for the held-out share."""
    positions = height * width
    chosen = np.random.default_rng(seed).permutation(positions)[: round(share * positions)]
    mask = np.zeros(positions, bool)
    mask[chosen] = True
    return mask


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/calibration", help="folder for the two files")
    parser.add_argument("--epochs", type=int, default=60, help="epochs (default 60, as the demo)")
    parser.add_argument("--holdout", type=float, default=0.1, help="held-out share of positions")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out positions")
    args = parser.parse_args(argv)

    images = data.demo_images(count=5)  # [5, 128, 128, 3]
    count, height, width, channels = images.shape
    mask = held_out_split(height, width, args.holdout, args.seed)  # [H * W]
    pixels = images.reshape(count, height * width, channels)  # [N, H * W, 3]
    grid = data.pixel_grid(height, width)  # [H * W, 2]
    train_x = np.tile(grid[~mask], (count, 1))
    train_y = pixels[:, ~mask].reshape(-1, channels)
    model = mdn_jax.fit(
        train_x,
        train_y,
        model_config=runs.image_model_config(components=10),
        train_config=mdn_jax.TrainConfig(epochs=args.epochs, batch_size=200),
    )
    # One mixture per held-out position, scored against every image's colour there.
    mixture = model.predict(grid[mask])  # batch [M]
    metrics = mdn_jax.calibration_metrics(mixture, pixels[:, mask])  # y [N, M, 3], broadcast
    metrics["held_out_positions"] = int(mask.sum())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "calibration.json").write_text(json.dumps(metrics, indent=2) + "\n")
    media.save_png(out / "calibration.png", media.calibration_chart(metrics))
    coverage = ", ".join(f"{level}: {value:.3f}" for level, value in metrics["coverage"].items())
    print(f"held-out CRPS {metrics['crps_mean']:.4f}; coverage {coverage}")
    print(f"wrote {out}/calibration.json and {out}/calibration.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
