"""The README's 4x picture: a trained run's render at 4 times its training size beside the
training pixels blown up 4 times (nearest neighbour), one centre crop of each, side by side.

    python benchmarks/hashgrid_photo_probe.py --save-photos photos/
    mdn-jax train photos/chelsea.png --out runs/chelsea --epochs 300
    python benchmarks/render_4x_figure.py runs/chelsea docs/encodings/hashgrid_4x.png

The render is `mdn-jax render RUN --size 4Hx4W --method mode` (`mdn_jax.render.render`); for a
run on one image the most probable component's mean is that image. `--crop` is the crop's side
in training pixels (default 64, so the PNG stays small).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run folder of `mdn-jax train` on one image")
    parser.add_argument("out", help="the PNG to write")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--crop", type=int, default=64, help="crop side in training pixels")
    args = parser.parse_args(argv)

    from mdn_jax import data, media, render, runs

    config = json.loads((Path(args.run) / "config.json").read_text())
    height, width = config["data"]["height"], config["data"]["width"]
    (image,) = data.load_images(config["data"]["source"], size=(height, width))
    graphdef, params, _, _ = runs.load_run(args.run)
    big = render.render(
        graphdef, params, height=height * args.scale, width=width * args.scale, method="mode"
    )
    blocks = np.repeat(np.repeat(image, args.scale, axis=0), args.scale, axis=1)
    top, left = (height - args.crop) // 2, (width - args.crop) // 2
    rows = slice(top * args.scale, (top + args.crop) * args.scale)
    cols = slice(left * args.scale, (left + args.crop) * args.scale)
    gap = np.ones((args.crop * args.scale, 4, 3), np.float32)
    figure = np.concatenate([blocks[rows, cols], gap, big[rows, cols]], axis=1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    media.save_png(args.out, figure)
    print(f"wrote {args.out}: training pixels x{args.scale} | render at {args.scale}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
