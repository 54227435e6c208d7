"""The training-step leads of PERF_NOTES, measured as ratios within one run.

Reference workload (81,920 pairs from the five demo images, trunk 100,100,100,100,100,50 ReLU,
joint K=10 over D=3, Adam 1e-3, a host-side permutation every epoch), with a pure-function
trunk (a list of (W, b)) and one scanned, jitted, donated epoch per call, so that only the
variant under test differs between contenders:

  softplus       scales = softplus(raw) + floor, then log(scales): mdn_jax's head today
  log            log-scales straight from the head, no floor (the hand-written MDN's head)
  log-clamp      log-scales clamped at log(floor) (a floor with zero gradient below it)
  log-smooth     log-scales = logaddexp(raw, log floor), i.e. scales = exp(raw) + floor
  +vjp           the closed-form custom_vjp NLL of mdn_jax.fastgrad instead of autodiff
  unroll=N       lax.scan(..., unroll=N)
  mse            the same trunk with a 3-output head and squared error (the head's cost)

Contenders alternate (A B C ... A B C), compilation is excluded, figures are medians; the ratio
is each contender over `softplus`. Then, per structure (joint, per_dim, full; K=10, D=3, batch
4096), the mixture NLL's value and gradient alone (both losses, nll and discretised): autodiff of
mdn_jax's `nll` / `discretised_log_prob` on the mixture built from the same log-scale /
log-Cholesky outputs, against `mdn_jax.fastgrad`'s closed forms.
Prints JSON lines, then markdown tables.

    python benchmarks/step_leads.py                             # batch 200 and 4096, 3 repeats
    python benchmarks/step_leads.py --batch 200 --steps 10 --repeats 1     # smoke test
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

import mdn_jax as mdn  # noqa: E402
from mdn_jax import data, fastgrad  # noqa: E402

TRUNK = (100, 100, 100, 100, 100, 50)
COMPONENTS, DIMS, FLOOR = 10, 3, 0.01
LOG_FLOOR = math.log(FLOOR)
HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)


def init_params(key, outputs):
    """He-initialised `[(W, b), ...]` for the trunk and a head with `outputs` units."""
    widths = (2, *TRUNK, outputs)
    keys = jax.random.split(key, len(widths) - 1)
    return [
        (jax.random.normal(k, (a, b)) * math.sqrt(2.0 / a), jnp.zeros(b))
        for k, a, b in zip(keys, widths[:-1], widths[1:])
    ]


def forward(params, x):
    """`[B, 2]` -> the head's raw outputs `[B, outputs]`."""
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return x @ w + b


def split_head(raw):
    """Raw head outputs `[B, K + 2KD]` -> logits `[B, K]`, means and raw scales `[B, K, D]`."""
    k, d = COMPONENTS, DIMS
    means = raw[:, k : k + k * d].reshape(-1, k, d)
    return raw[:, :k], means, raw[:, k + k * d :].reshape(-1, k, d)


LOG_SCALES = {
    "softplus": lambda raw: jnp.log(jax.nn.softplus(raw) + FLOOR),
    "log": lambda raw: raw,
    "log-clamp": lambda raw: jnp.maximum(raw, LOG_FLOOR),
    "log-smooth": lambda raw: jnp.logaddexp(raw, LOG_FLOOR),
}


def autodiff_nll(logits, means, log_scales, y):
    """The plain log-space joint NLL, differentiated by autodiff."""
    z = (y[:, None, :] - means) * jnp.exp(-log_scales)
    log_n = -0.5 * jnp.sum(z * z, -1) - jnp.sum(log_scales, -1) - DIMS * HALF_LOG_TWO_PI
    return -jnp.mean(jax.nn.logsumexp(jax.nn.log_softmax(logits) + log_n, -1))


def softplus_nll(logits, means, raw, y):
    """mdn_jax's head today: scales = softplus(raw) + floor, divided by, then logged."""
    scales = jax.nn.softplus(raw) + FLOOR
    z = (y[:, None, :] - means) / scales
    log_n = -0.5 * jnp.sum(z * z, -1) - jnp.sum(jnp.log(scales), -1) - DIMS * HALF_LOG_TWO_PI
    return -jnp.mean(jax.nn.logsumexp(jax.nn.log_softmax(logits) + log_n, -1))


def mixture_loss(scales: str, *, closed_form: bool):
    def loss(params, x, y):
        logits, means, raw = split_head(forward(params, x))
        if scales == "softplus" and not closed_form:
            return softplus_nll(logits, means, raw, y)
        nll = fastgrad.joint_nll if closed_form else autodiff_nll
        return nll(logits, means, LOG_SCALES[scales](raw), y)

    return loss, COMPONENTS + 2 * COMPONENTS * DIMS


def mse_loss():
    def loss(params, x, y):
        return jnp.mean(jnp.sum(jnp.square(forward(params, x) - y), -1))

    return loss, DIMS


VARIANTS = {  # name: (loss factory, scan unroll)
    "softplus": (functools.partial(mixture_loss, "softplus", closed_form=False), 1),
    "log": (functools.partial(mixture_loss, "log", closed_form=False), 1),
    "log-clamp": (functools.partial(mixture_loss, "log-clamp", closed_form=False), 1),
    "log-smooth": (functools.partial(mixture_loss, "log-smooth", closed_form=False), 1),
    "softplus+vjp": (functools.partial(mixture_loss, "softplus", closed_form=True), 1),
    "log+vjp": (functools.partial(mixture_loss, "log", closed_form=True), 1),
    "log-smooth+vjp": (functools.partial(mixture_loss, "log-smooth", closed_form=True), 1),
    "log-smooth+vjp unroll=2": (functools.partial(mixture_loss, "log-smooth", closed_form=True), 2),
    "log-smooth+vjp unroll=4": (functools.partial(mixture_loss, "log-smooth", closed_form=True), 4),
    "log-smooth+vjp unroll=8": (functools.partial(mixture_loss, "log-smooth", closed_form=True), 8),
    "softplus unroll=4": (functools.partial(mixture_loss, "softplus", closed_form=False), 4),
    "mse": (mse_loss, 1),
    "mse unroll=4": (mse_loss, 4),
}


def contender(name, xs, ys, *, batch_size, steps, seed=0):
    """A callable that trains one scanned epoch of `steps` batches and blocks until done."""
    make_loss, unroll = VARIANTS[name]
    loss, outputs = make_loss()
    optimizer = optax.adam(1e-3)
    params = init_params(jax.random.key(seed), outputs)
    state = {"carry": (params, optimizer.init(params))}
    xs_device, ys_device = jax.device_put(xs), jax.device_put(ys)
    rng = np.random.default_rng(seed)

    @functools.partial(jax.jit, donate_argnums=(0,))
    def epoch(carry, order):
        def body(carry, idx):
            params, opt_state = carry
            value, grads = jax.value_and_grad(loss)(params, xs_device[idx], ys_device[idx])
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), value

        return jax.lax.scan(body, carry, order, unroll=unroll)

    def run():
        order = rng.permutation(xs.shape[0])[: steps * batch_size].reshape(steps, batch_size)
        state["carry"], losses = epoch(state["carry"], order)
        losses.block_until_ready()
        if not np.isfinite(float(losses[-1])):
            raise FloatingPointError(f"{name}: non-finite loss; the comparison is void")
        run.last_epoch_loss = float(jnp.mean(losses))  # fit after equal epochs, same seed

    return run


def likelihood_inputs(structure, batch, key):
    """Head outputs of `structure` (K=10, D=3) for `batch` samples, and targets."""
    k, d = COMPONENTS, DIMS
    keys = jax.random.split(key, 5)
    y = jax.random.normal(keys[4], (batch, d))
    if structure == "per_dim":
        shape = (batch, d, k)
        return fastgrad.PerDimHead(*(jax.random.normal(key, shape) for key in keys[:3])), y
    logits = jax.random.normal(keys[0], (batch, k))
    means = jax.random.normal(keys[1], (batch, k, d))
    log_scales = 0.3 * jax.random.normal(keys[2], (batch, k, d))
    if structure == "joint":
        return fastgrad.JointHead(logits, means, log_scales), y
    lower = 0.1 * jax.random.normal(keys[3], (batch, k, d, d))
    return fastgrad.FullHead(logits, means, log_scales, lower), y


def as_mixture(head):
    """The same distribution as an mdn_jax mixture (scales exponentiated, L assembled)."""
    if isinstance(head, fastgrad.FullHead):
        eye = jnp.eye(head.means.shape[-1])
        tril = jnp.tril(head.lower, -1) + jnp.exp(head.log_diag)[..., None] * eye
        return mdn.FullMixture(head.logits, head.means, tril)
    build = mdn.JointMixture if isinstance(head, fastgrad.JointHead) else mdn.PerDimMixture
    return build(head.logits, head.means, jnp.exp(head.log_scales))


def likelihood_leads(repeats: int, env: dict, *, batch: int = 4096) -> list[list]:
    """Closed-form VJP against autodiff of the mixture NLL alone, per structure; table rows."""
    losses = {
        "nll": {
            "autodiff": lambda head, y: mdn.nll(as_mixture(head), y),
            "closed-form": fastgrad.nll,
        },
        "discretised": {
            "autodiff": lambda head, y: -jnp.mean(mdn.discretised_log_prob(as_mixture(head), y)),
            "closed-form": fastgrad.discretised_nll,
        },
    }
    rows = []
    for structure, loss_name in itertools.product(("joint", "per_dim", "full"), losses):
        head, y = likelihood_inputs(structure, batch, jax.random.key(len(structure)))
        y = jnp.clip(jnp.round((0.5 + 0.2 * y) * 255.0) / 255.0, 0.0, 1.0)  # 8-bit targets
        calls = {}
        for name, loss in losses[loss_name].items():
            function = jax.jit(jax.value_and_grad(loss))
            calls[name] = functools.partial(lambda f: jax.block_until_ready(f(head, y)), function)
            calls[name]()  # compile
        times = common.alternate(calls, repeats=repeats)
        speed = {name: batch / common.median(t) for name, t in times.items()}
        ratio = speed["closed-form"] / speed["autodiff"]
        common.emit(
            {
                "kind": "likelihood-lead",
                "structure": structure,
                "loss": loss_name,
                "batch_size": batch,
                "autodiff_per_second": round(speed["autodiff"]),
                "closed_form_per_second": round(speed["closed-form"]),
                "ratio_closed_form_over_autodiff": round(ratio, 3),
                "repeats": repeats,
                **env,
            }
        )
        rows.append(
            [
                structure,
                loss_name,
                f"{speed['autodiff'] / 1e6:.2f}M",
                f"{speed['closed-form'] / 1e6:.2f}M",
                f"{ratio:.2f}x",
            ]
        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", default="200,4096", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per contender")
    parser.add_argument("--steps", type=int, default=None, help="batches per timed epoch")
    parser.add_argument(
        "--variants", default="all", help="comma-separated subset of: " + ", ".join(VARIANTS)
    )
    args = parser.parse_args(argv)
    names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    names = ["softplus"] + [n for n in names if n != "softplus"]  # the ratios' reference
    xs, ys = data.image_pairs(data.demo_images(count=5, size=128))
    xs = ((xs - np.asarray(data.IMAGE_INPUT_OFFSET)) / data.IMAGE_INPUT_SCALE).astype(np.float32)
    env = common.environment()
    common.emit({"kind": "environment", **env})
    rows = []
    for batch_size in (int(b) for b in args.batch.split(",")):
        steps = min(xs.shape[0] // batch_size, args.steps or xs.shape[0])
        runs = {n: contender(n, xs, ys, batch_size=batch_size, steps=steps) for n in names}
        compile_seconds = {name: common.timed(run) for name, run in runs.items()}
        times = common.alternate(runs, repeats=args.repeats)
        speed = {name: steps * batch_size / common.median(t) for name, t in times.items()}
        for name, value in speed.items():
            ratio = value / speed["softplus"]
            common.emit(
                {
                    "kind": "step-lead",
                    "batch_size": batch_size,
                    "variant": name,
                    "samples_per_second": round(value),
                    "ratio_over_softplus": round(ratio, 3),
                    "steps_timed": steps,
                    "repeats": args.repeats,
                    "compile_seconds": round(compile_seconds[name], 2),
                    "last_epoch_mean_loss": round(runs[name].last_epoch_loss, 4),
                    **env,
                }
            )
            loss = f"{runs[name].last_epoch_loss:.3f}"
            rows.append([batch_size, name, f"{value / 1e3:.0f}k", f"{ratio:.2f}x", loss])
    print()
    print(
        f"Training step variants on {env['device']} (JAX {env['jax']}); median of "
        f"{args.repeats}; ratio = variant / softplus (>1: faster than mdn_jax's head today); "
        "loss: mean training loss of each variant's last epoch (all ran equally many)"
    )
    print()
    headers = ["batch", "variant", "samples/s", "vs softplus", "last-epoch loss"]
    print(common.markdown_table(headers, rows))
    rows = likelihood_leads(max(args.repeats, 3) * 3, env)
    print()
    print("Mixture loss value + gradient alone, K=10, D=3, batch 4096 (samples/s)")
    print()
    print(common.markdown_table(["structure", "loss", "autodiff", "closed form", "ratio"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
