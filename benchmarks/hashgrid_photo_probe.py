"""Probe: a joint K=10 MDN on a hash-grid encoding, trained in plain JAX on five real photos.

Five photographs that scikit-image ships (astronaut, coffee, chelsea, rocket,
hubble_deep_field), each centre-cropped to a square, resized to 128x128 with antialiasing and
rounded to 8 bits, become 81,920 (position, colour) pairs, the reference example's multi-image
task. Positions are pixel centres in the unit square, which is the hash grid's box, so they go
in unchanged. The network is `mdn_jax.hashgrid.encode` -> a small ReLU MLP -> a joint mixture
head (logits, means, `softplus + floor` scales, as `mdn_jax.model` parametrises them); training is
a hand-written epoch as one jitted `lax.scan` with optax Adam (instant-ngp's beta2 0.99 and
eps 1e-15). It stops after `--epochs` or once `--seconds` of wall time (compilation included)
are spent, whichever comes first, and prints per photo the NLL (nats per pixel, all three
channels together), bits per channel (the 8-bit discretised likelihood) and the coverage and
component PSNRs, as JSON lines and a table. It picked the settings the library uses
(`mdn_jax.image_defaults`); benchmarks/photo_fidelity.py measures the library itself.

    python benchmarks/hashgrid_photo_probe.py --seconds 34
    python benchmarks/hashgrid_photo_probe.py --levels 16 --log2-table-size 17 --lr 1e-2 \\
        --batch 4096 --schedule cosine --seconds 34
    python benchmarks/hashgrid_photo_probe.py --save-photos photos/   # then: mdn-jax train photos/

The defaults are the issue's probe (12 levels x 2 features, 2^15 rows, resolutions 16 to 256,
2 x 64 ReLU, batch 4096, Adam 1e-2, constant rate). Measured 2026-12-03 on the 2-core CPU while
other jobs kept it loaded (load average 8-15, so seconds are pessimistic and noisy), joint K=10,
60 epochs; coverage PSNR per photo in the order above, and the 4x render guided by the bicubic
upscale against the real photo (bicubic itself: 25.1, 29.8, 34.0, 31.6, 25.0 dB):

| settings | NLL nats/px | bits/ch | coverage PSNR dB | 4x PSNR dB | s |
|---|---:|---:|---|---|---:|
| defaults (constant 1e-2) | -7.80 | 4.24 | 29.2 28.9 32.1 36.3 32.7 | | 24 |
| `--schedule cosine` | -9.68 | 3.39 | 28.9 31.8 32.4 35.5 32.7 | | 36 |
| `--schedule cosine --levels 8 --features 4` | -10.31 | 3.10 | 31.9 36.2 34.6 38.0 36.5 | 23.7 27.9 29.4 30.1 24.3 | 27 |
| the same, seeds 1 and 2 | -10.15, -10.30 | 3.19, 3.12 | 30.4 32.5 33.7 38.0 34.5; 30.5 34.0 34.2 36.6 34.2 | | 29 |
| the same, `--finest 128` | -9.57 | 3.42 | 32.0 35.1 34.3 36.9 34.7 | 23.8 28.1 29.7 29.9 24.3 | 30 |
| the same, `--finest 512 --log2-table-size 17` | -10.92 | 2.85 | 32.8 37.1 35.0 38.6 37.0 | 23.6 27.6 28.9 29.9 24.3 | 53 |
| the same, 120 epochs | -11.05 | 2.80 | 32.4 36.5 34.9 37.8 36.9 | 23.7 27.9 29.4 30.0 24.4 | 44 |
| `--schedule cosine --levels 16 --log2-table-size 17 --finest 512` | -10.83 | 2.89 | 32.3 37.0 35.2 39.4 37.9 | | 77 |
| `--schedule cosine --batch 8192` / `--batch 2048` | -8.93 / -9.38 | 3.73 / 3.53 | astronaut 28.4 / 28.2 | | 47 / 41 |
| `--schedule cosine --lr 3e-2` | -7.54 | 4.39 | 25.5 29.6 28.5 33.2 31.5 | | 23 |
| `--schedule cosine --mlp-lr 3e-3` | -9.73 | 3.39 | 29.2 32.5 31.8 35.8 32.3 | | 41 |
"""  # noqa: E501 (a Markdown table's rows cannot wrap)

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import mdn_jax  # noqa: E402
from mdn_jax import hashgrid as hg  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field")
SCALE_FLOOR = 1e-3


def load_photos(size: int, *, scale: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The five photos `[5, size, size, 3]` and the same crops at `scale` times the size
    (the reference for an upscaled render), float32 in [0, 1], rounded to 8 bits."""
    import skimage.data
    import skimage.transform

    small, large = [], []
    for name in PHOTOS:
        image = getattr(skimage.data, name)()[..., :3]
        height, width = image.shape[:2]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        square = image[top : top + side, left : left + side].astype(np.float64) / 255.0
        for out, pixels in ((small, size), (large, size * scale)):
            resized = skimage.transform.resize(square, (pixels, pixels), anti_aliasing=True)
            out.append(np.round(np.clip(resized, 0.0, 1.0) * 255.0) / 255.0)
    return np.stack(small).astype(np.float32), np.stack(large).astype(np.float32)


def init_params(key, *, grid: hg.HashGridConfig, hidden, components, colours, seed: int):
    """Tables, MLP layers [(W, b)] and head; the head starts small with its means on K
    training colours (like `--init spread`), so no component starts far from the data.

    The MLP and head are drawn with numpy: eager JAX ops (a permutation of 81,920 colours
    above all) cost seconds on a busy CPU and would count against the wall-time budget.
    """
    rng = np.random.default_rng(seed)
    layers, width = [], grid.output_size
    for size in hidden:
        weights = rng.normal(0.0, np.sqrt(2.0 / width), (width, size))
        layers.append((jnp.asarray(weights, jnp.float32), jnp.zeros(size, jnp.float32)))
        width = size
    dims = colours.shape[-1]
    head_w = rng.normal(0.0, 0.1 * np.sqrt(1.0 / width), (width, components * (1 + 2 * dims)))
    picks = rng.choice(len(colours), components, replace=False)
    # Scales start near 0.1: softplus(raw) + floor = 0.1.
    head_b = np.concatenate(
        [
            np.zeros(components),
            np.asarray(colours)[picks].reshape(-1),
            np.full(components * dims, np.log(np.expm1(0.1 - SCALE_FLOOR))),
        ]
    )
    return {
        "tables": hg.init_hashgrid(key, config=grid),
        "layers": layers,
        "head": (jnp.asarray(head_w, jnp.float32), jnp.asarray(head_b, jnp.float32)),
    }


def apply(params, positions, *, grid: hg.HashGridConfig, components: int, dims: int):
    """Joint mixture for positions `[B, 2]`: logits `[B, K]`, means and scales `[B, K, D]`."""
    x = hg.encode(params["tables"], positions, config=grid)
    for w, b in params["layers"]:
        x = jax.nn.relu(x @ w + b)
    raw = x @ params["head"][0] + params["head"][1]
    logits = raw[:, :components]
    means = raw[:, components : components * (1 + dims)].reshape(-1, components, dims)
    scales = jax.nn.softplus(raw[:, components * (1 + dims) :]).reshape(-1, components, dims)
    return mdn_jax.joint(logits, means, scales + SCALE_FLOOR)


def make_optimizer(args, steps_total: int):
    def rate(lr):
        if args.schedule == "cosine":
            return optax.cosine_decay_schedule(lr, steps_total, alpha=0.05)
        return lr

    def adam(lr):
        return optax.adam(rate(lr), b1=0.9, b2=0.99, eps=1e-15)

    mlp_lr = args.mlp_lr if args.mlp_lr is not None else args.lr
    labels = {"tables": "tables", "layers": "mlp", "head": "mlp"}
    return optax.multi_transform(
        {"tables": adam(args.lr), "mlp": adam(mlp_lr)},
        lambda params: {
            name: jax.tree.map(lambda _: labels[name], v) for name, v in params.items()
        },
    )


def make_epoch(optimizer, model):
    """One epoch as one compiled scan over batches of shuffled indices `[steps, batch]`."""

    def loss(params, x, y):
        return jnp.mean(mdn_jax.nll(model(params, x), y))

    def step(carry, indices, xs, ys):
        params, opt_state = carry
        value, grads = jax.value_and_grad(loss)(params, xs[indices], ys[indices])
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def epoch(params, opt_state, batches, xs, ys):
        (params, opt_state), losses = jax.lax.scan(
            lambda c, i: step(c, i, xs, ys), (params, opt_state), batches
        )
        return params, opt_state, jnp.mean(losses)

    return epoch


def scores(params, model, photos: np.ndarray, *, chunk: int = 4096) -> dict:
    """Per photo: NLL nats/pixel, bits per channel, coverage and component PSNR (dB)."""
    n, height, width, dims = photos.shape
    positions = mdn_jax.pixel_grid(height, width)
    colours = photos.reshape(n, -1, dims)

    @jax.jit
    def chunk_sums(x, y):  # x [C, 2], y [n, C, D]
        mixture = model(params, x)
        means = jnp.clip(mdn_jax.component_means(mixture), 0.0, 1.0)  # [C, K, D]
        errors = jnp.sum(jnp.square(means[None] - y[:, :, None, :]), axis=-1)  # [n, C, K]
        log_density = jax.vmap(lambda t: mdn_jax.log_prob(mixture, t))(y)  # [n, C]
        log_mass = jax.vmap(lambda t: mdn_jax.discretised_log_prob(mixture, t))(y)
        return (
            jnp.sum(jnp.min(errors, axis=-1), axis=1),  # closest component, summed over pixels
            jnp.sum(errors, axis=1),  # [n, K]
            jnp.sum(log_density, axis=1),
            jnp.sum(log_mass, axis=1),
        )

    totals = [0.0] * 4
    for start in range(0, height * width, chunk):
        parts = chunk_sums(positions[start : start + chunk], colours[:, start : start + chunk])
        totals = [t + np.asarray(p, np.float64) for t, p in zip(totals, parts)]
    closest, per_component, log_density, log_mass = totals
    pixels = height * width

    def psnr(sum_squared):
        return 10.0 * np.log10(1.0 / np.maximum(sum_squared / (pixels * dims), 1e-10))

    return {
        "nll_nats": (-log_density / pixels).round(3).tolist(),
        "bits_per_channel": (-log_mass / (pixels * dims * np.log(2.0))).round(3).tolist(),
        "coverage_psnr": psnr(closest).round(2).tolist(),
        "component_psnr": psnr(per_component.min(axis=1)).round(2).tolist(),
    }


def upscaled_renders(params, model, photos, references, *, chunk: int = 8192) -> dict:
    """Render at the references' resolution `[n, S*H, S*W, 3]` and compare with the real photo.

    `bicubic` is each 8-bit training photo upscaled with a cubic spline, the baseline any
    upscaler should reach. `render` takes at every pixel the component mean closest to that
    bicubic upscale (the coverage render between the training pixels, guided only by the
    training data, never by the real photo): does the model interpolate like an image, or show
    blocks and untrained grid vertices? Also returns the mode render (the most probable
    component's mean) `[S*H, S*W, 3]`, a patchwork of the photos for a multi-photo mixture.
    """
    import skimage.transform

    n, height, width, dims = references.shape
    positions = mdn_jax.pixel_grid(height, width)
    bicubic = np.stack(
        [np.clip(skimage.transform.resize(p, (height, width), order=3), 0, 1) for p in photos]
    )
    guides = bicubic.reshape(n, -1, dims).astype(np.float32)

    @jax.jit
    def chunk_render(x, y):  # x [C, 2], y [n, C, D] -> [n, C, D], [C, D]
        mixture = model(params, x)
        means = jnp.clip(mdn_jax.component_means(mixture), 0.0, 1.0)  # [C, K, D]
        errors = jnp.sum(jnp.square(means[None] - y[:, :, None, :]), axis=-1)  # [n, C, K]
        closest = jnp.take_along_axis(
            means[None], jnp.argmin(errors, axis=-1)[..., None, None], axis=2
        )[:, :, 0]
        return closest, jnp.clip(mdn_jax.most_probable_mean(mixture), 0.0, 1.0)

    pieces = [
        chunk_render(positions[i : i + chunk], guides[:, i : i + chunk])
        for i in range(0, height * width, chunk)
    ]
    render = np.concatenate([np.asarray(c) for c, _ in pieces], axis=1).reshape(references.shape)
    mode = np.concatenate([np.asarray(m) for _, m in pieces]).reshape(height, width, dims)

    def psnr(a, b):
        mse = np.mean(np.square(a.astype(np.float64) - b), axis=(1, 2, 3))
        return (10.0 * np.log10(1.0 / np.maximum(mse, 1e-10))).round(2).tolist()

    return {
        "render": render,
        "bicubic": bicubic,
        "mode": mode,
        "upscaled_coverage_psnr": psnr(render, references),
        "bicubic_psnr": psnr(bicubic, references),
    }


def save_renders(folder: str, upscaled: dict, references: np.ndarray) -> None:
    """Per photo a PNG: bicubic upscale | the model's render | the real photo; and the mode."""
    import skimage.io

    def save(name, image):
        pixels = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
        skimage.io.imsave(os.path.join(folder, name), pixels, check_contrast=False)

    os.makedirs(folder, exist_ok=True)
    for i, name in enumerate(PHOTOS):
        row = [upscaled["bicubic"][i], upscaled["render"][i], references[i]]
        save(f"{name}_bicubic_render_real.png", np.concatenate(row, axis=1))
    save("mode.png", upscaled["mode"])


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="photo side in pixels")
    parser.add_argument("--levels", type=int, default=12)
    parser.add_argument("--features", type=int, default=2, help="features per level")
    parser.add_argument("--log2-table-size", type=int, default=15)
    parser.add_argument("--coarsest", type=int, default=16)
    parser.add_argument("--finest", type=int, default=256)
    parser.add_argument("--hidden", type=int, nargs="*", default=[64, 64])
    parser.add_argument("--components", type=int, default=10)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (tables)")
    parser.add_argument("--mlp-lr", type=float, default=None, help="MLP and head (default --lr)")
    parser.add_argument("--schedule", choices=("constant", "cosine"), default="constant")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seconds", type=float, default=None, help="wall-time budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-photos", metavar="DIR", help="write the photos as PNGs and stop")
    parser.add_argument(
        "--upscale", type=int, default=4, help="also render at this many times the size (0: no)"
    )
    parser.add_argument("--render-dir", metavar="DIR", help="save the upscaled renders here")
    return parser.parse_args(argv)


def train(args, photos: np.ndarray):
    """Train on `photos [n, H, W, 3]`; returns params, the model function and a record."""
    start = time.perf_counter()
    xs, ys = mdn_jax.image_pairs(photos)
    grid = hg.HashGridConfig(
        levels=args.levels,
        features_per_level=args.features,
        log2_table_size=args.log2_table_size,
        coarsest_resolution=args.coarsest,
        finest_resolution=args.finest,
    )

    def model(params, x):
        return apply(params, x, grid=grid, components=args.components, dims=ys.shape[-1])

    params = init_params(
        jax.random.key(args.seed),
        grid=grid,
        hidden=args.hidden,
        components=args.components,
        colours=ys,
        seed=args.seed,
    )
    steps = len(xs) // args.batch
    optimizer = make_optimizer(args, steps * args.epochs)
    opt_state = optimizer.init(params)
    epoch = make_epoch(optimizer, model)
    xs_device, ys_device = jnp.asarray(xs), jnp.asarray(ys)
    rng = np.random.default_rng(args.seed)  # numpy permutation: much faster than jax's on CPU
    loss, epoch_seconds = float("nan"), []
    while len(epoch_seconds) < args.epochs:
        began = time.perf_counter()
        batches = rng.permutation(len(xs))[: steps * args.batch].reshape(steps, args.batch)
        params, opt_state, loss = epoch(params, opt_state, batches, xs_device, ys_device)
        loss = float(loss)
        epoch_seconds.append(time.perf_counter() - began)
        if args.seconds is not None and time.perf_counter() - start >= args.seconds:
            break
    record = {
        "grid": grid.to_dict(),
        "epochs": len(epoch_seconds),
        "train_seconds": round(time.perf_counter() - start, 1),
        "first_epoch_seconds": round(epoch_seconds[0], 2),  # includes compilation
        "median_epoch_seconds": round(float(np.median(epoch_seconds[1:] or epoch_seconds)), 3),
        "final_train_loss": round(loss, 4),
    }
    return params, model, record


def main(argv=None) -> int:
    args = parse(argv)
    env = common.environment()
    common.emit({"kind": "environment", **env})
    photos, references = load_photos(args.size, scale=max(args.upscale, 1))
    if args.save_photos:
        import skimage.io

        os.makedirs(args.save_photos, exist_ok=True)
        for name, photo in zip(PHOTOS, photos):
            path = os.path.join(args.save_photos, f"{name}.png")
            skimage.io.imsave(path, np.round(photo * 255).astype(np.uint8), check_contrast=False)
        print(f"wrote {len(PHOTOS)} photos to {args.save_photos}")
        return 0
    params, model, trained = train(args, photos)
    result = scores(params, model, photos)
    settings = ("size", "hidden", "components", "batch", "lr", "mlp_lr", "schedule", "seed")
    record = {
        "kind": "hashgrid_photo_probe",
        "photos": list(PHOTOS),
        **{name: getattr(args, name) for name in settings},
        **trained,
        "mean_nll_nats": round(float(np.mean(result["nll_nats"])), 3),
        "mean_bits_per_channel": round(float(np.mean(result["bits_per_channel"])), 3),
        **result,
    }
    if args.upscale > 1:
        upscaled = upscaled_renders(params, model, photos, references)
        record["upscale"] = args.upscale
        record["upscaled_coverage_psnr"] = upscaled["upscaled_coverage_psnr"]
        record["bicubic_psnr"] = upscaled["bicubic_psnr"]
        if args.render_dir:
            save_renders(args.render_dir, upscaled, references)
    common.emit({**record, **env})
    report(record)
    return 0


def report(record: dict) -> None:
    print()
    print(
        f"{record['epochs']} epochs in {record['train_seconds']} s (first, with compilation: "
        f"{record['first_epoch_seconds']} s; then {record['median_epoch_seconds']} s each); NLL "
        f"{record['mean_nll_nats']} nats/pixel, {record['mean_bits_per_channel']} bits/channel "
        "on average"
    )
    print()
    columns = {
        "NLL nats/pixel": "nll_nats",
        "bits/channel": "bits_per_channel",
        "coverage PSNR dB": "coverage_psnr",
        "component PSNR dB": "component_psnr",
    }
    if "upscale" in record:
        columns[f"{record['upscale']}x coverage PSNR dB"] = "upscaled_coverage_psnr"
        columns[f"{record['upscale']}x bicubic PSNR dB"] = "bicubic_psnr"
    rows = [[name, *(record[key][i] for key in columns.values())] for i, name in enumerate(PHOTOS)]
    print(common.markdown_table(["photo", *columns], rows))


if __name__ == "__main__":
    sys.exit(main())
