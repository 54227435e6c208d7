"""The MDNs mdn_jax is measured against, written without mdn_jax, as their users would write them.

- `handwritten_*`: a hand-written JAX MDN of the kind a competent user writes in an afternoon
  (Flax Linen, optax.adam, heads for logits / means / log-sigmas, one `lax.scan` per epoch over
  device-resident data, donated state, a host-side numpy permutation), the same model's jitted
  step driven by a Python loop, and a jitted, tiled `mode` render of it.
- `keras_*`: keras-mdn-layer on Keras 3 with the JAX backend, used as its README shows
  (`Sequential` of Dense layers + `mdn.MDN`, `compile(loss=get_mixture_loss_func(...),
  optimizer=Adam)`, then `fit`); only when `keras_mdn_layer` is installed.

Every contender trains the joint diagonal mixture of the reference workload (inputs already
normalised to [-1, 1] by the caller) and runs on JAX's default device, so on a GPU host all of
them run on the GPU. Each factory returns a callable that does one timed unit of work and
blocks until it is done.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence

import numpy as np

HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)


def epoch_order(rng, n: int, steps: int, batch_size: int) -> np.ndarray:
    """A fresh permutation as `[steps, batch_size]` indices, wrapping around past `n` so every
    contender trains exactly `steps * batch_size` samples per timed call (as mdn_jax does)."""
    return np.resize(rng.permutation(n), steps * batch_size).reshape(steps, batch_size)


# ---------------------------------------------------------------------------------------------
# The hand-written JAX MDN (~80 lines, what the "hand-written scan" row measures).


def handwritten_model(hidden: Sequence[int], components: int, dims: int):
    """A Flax Linen MDN: ReLU trunk, then three Dense heads (logits, means, log-sigmas)."""
    import flax.linen as nn

    class MDN(nn.Module):
        @nn.compact
        def __call__(self, x):  # x [B, 2] -> logits [B, K], means and log-sigmas [B, K, D]
            for width in hidden:
                x = nn.relu(nn.Dense(width)(x))
            logits = nn.Dense(components)(x)
            means = nn.Dense(components * dims)(x).reshape(-1, components, dims)
            log_sigmas = nn.Dense(components * dims)(x).reshape(-1, components, dims)
            return logits, means, log_sigmas

    return MDN()


def handwritten_trainer(xs, ys, *, hidden, batch_size, components=10, seed=0, options=None):
    """`(init_state, epoch, step, nll)`: the scanned epoch and the single jitted step.
    `options`: XLA compiler options for the epoch (None: XLA's defaults, as its user has)."""
    import jax
    import jax.numpy as jnp
    import optax

    model = handwritten_model(hidden, components, ys.shape[1])
    optimizer = optax.adam(1e-3)
    params = model.init(jax.random.key(seed), jnp.zeros((1, xs.shape[1])))

    def nll(params, x, y):
        logits, means, log_sigmas = model.apply(params, x)
        z = (y[:, None, :] - means) * jnp.exp(-log_sigmas)
        log_n = -0.5 * jnp.sum(z * z, -1) - jnp.sum(log_sigmas, -1) - y.shape[1] * HALF_LOG_TWO_PI
        return -jnp.mean(jax.nn.logsumexp(jax.nn.log_softmax(logits) + log_n, -1))

    def update(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(nll)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    @functools.partial(jax.jit, donate_argnums=(0, 1), compiler_options=options)
    def epoch(params, opt_state, xs, ys, order):  # order [steps, batch] int32
        def body(carry, idx):
            params, opt_state, loss = update(*carry, xs[idx], ys[idx])
            return (params, opt_state), loss

        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), order)
        return params, opt_state, losses

    step = jax.jit(update, donate_argnums=(0, 1))
    return (params, optimizer.init(params)), epoch, step, nll


def handwritten_scan(xs, ys, *, hidden, batch_size, steps, seed=0, options=None):
    """One call: one epoch of `steps` batches as one scanned, jitted call (`options`: see
    `handwritten_trainer`)."""
    import jax

    state, epoch, _, _ = handwritten_trainer(
        xs, ys, hidden=hidden, batch_size=batch_size, options=options
    )
    xs_device, ys_device = jax.device_put(xs), jax.device_put(ys)
    rng = np.random.default_rng(seed)
    holder = {"state": state}

    def run():
        order = epoch_order(rng, xs.shape[0], steps, batch_size)
        params, opt_state, losses = epoch(*holder["state"], xs_device, ys_device, order)
        holder["state"] = (params, opt_state)
        losses.block_until_ready()

    return run


def handwritten_loop(xs, ys, *, hidden, batch_size, steps, seed=0):
    """One call: `steps` calls of the jitted step on numpy-sliced batches."""
    state, _, step, _ = handwritten_trainer(xs, ys, hidden=hidden, batch_size=batch_size)
    rng = np.random.default_rng(seed)
    holder = {"state": state}

    def run():
        order = epoch_order(rng, xs.shape[0], steps, batch_size)
        params, opt_state = holder["state"]
        for idx in order:
            params, opt_state, loss = step(params, opt_state, xs[idx], ys[idx])
        holder["state"] = (params, opt_state)
        loss.block_until_ready()

    return run


def handwritten_render(*, hidden, size, components=10, dims=3, tile=4096, seed=0):
    """One call: the `mode` render (mean of the heaviest component) of a size x size grid.

    Positions are made on the device and mapped in tiles (`lax.map`), as a user who has read
    that a one-shot 1024x1024 forward pass is memory-bound would write it; returns numpy.
    """
    import jax
    import jax.numpy as jnp

    model = handwritten_model(hidden, components, dims)
    params = model.init(jax.random.key(seed), jnp.zeros((1, 2)))

    @jax.jit
    def render(params):
        tiles = -(-size * size // tile)  # the last tile is padded past the image, then cut
        ids = jnp.minimum(jnp.arange(tiles * tile), size * size - 1).reshape(tiles, tile)
        centres = lambda i: (i + 0.5) / size * 2.0 - 1.0  # pixel centres in [-1, 1]

        def one_tile(pixel_ids):
            x = jnp.stack([centres(pixel_ids // size), centres(pixel_ids % size)], -1)
            logits, means, _ = model.apply(params, x)
            best = jnp.argmax(logits, -1)
            return jnp.take_along_axis(means, best[:, None, None], axis=1)[:, 0]

        return jax.lax.map(one_tile, ids).reshape(-1, dims)[: size * size].reshape(size, size, dims)

    return lambda: np.asarray(render(params))


# ---------------------------------------------------------------------------------------------
# keras-mdn-layer on Keras 3 with the JAX backend.


def keras_available() -> bool:
    """True when keras-mdn-layer can be imported with Keras on the JAX backend."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        import keras
        import keras_mdn_layer  # noqa: F401
    except ImportError:
        return False
    return keras.backend.backend() == "jax"


def keras_model(*, hidden, components=10, dims=3, seed=0):
    """The README's recipe: Dense ReLU layers, then `mdn.MDN`, compiled with its loss and Adam."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras
    import keras_mdn_layer as mdn

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input(shape=(2,))])
    for width in hidden:
        model.add(keras.layers.Dense(width, activation="relu"))
    model.add(mdn.MDN(dims, components))
    model.compile(
        loss=mdn.get_mixture_loss_func(dims, components),
        optimizer=keras.optimizers.Adam(learning_rate=1e-3),
    )
    return model


def keras_fit(xs, ys, *, hidden, batch_size, steps, seed=0):
    """One call: `model.fit` for one epoch of `steps` batches (Keras shuffles every epoch)."""
    model = keras_model(hidden=hidden, dims=ys.shape[1], seed=seed)
    rows = np.resize(np.arange(xs.shape[0]), steps * batch_size)  # exactly `steps` full batches
    x, y = xs[rows], ys[rows]
    return lambda: model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=True, verbose=0)


def keras_render(*, hidden, size, components=10, dims=3, batch_size=16384, seed=0):
    """One call: `model.predict` over the grid, then the heaviest component's mean in numpy."""
    model = keras_model(hidden=hidden, components=components, dims=dims, seed=seed)
    centres = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    grid = np.stack(np.meshgrid(centres, centres, indexing="ij"), -1).reshape(-1, 2)

    def run():
        out = model.predict(grid, batch_size=batch_size, verbose=0)
        means = out[:, : components * dims].reshape(-1, components, dims)
        best = np.argmax(out[:, -components:], axis=-1)
        return means[np.arange(len(best)), best].reshape(size, size, dims)

    return run
