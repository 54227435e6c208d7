"""The training step's memory layouts (issue 12): the transposed likelihood and the padded carry.

- Every structure's `transposed_log_prob` is `log_prob(head_to_mixture(raw_t.T), y)`: values
  and gradients against the mixture code in float64, ordinary and extreme raw outputs, both
  scale and mean activations, several batch sizes, under jit and vmap; `forward.raw_outputs(...,
  transposed=True)` is the transpose of the plain forward.
- `step.model_loss` takes it exactly for the built-in nll of a structure that has it on a plain
  `[B, in]` batch, and the mixture path otherwise.
- `pad_flat` / `unpad_flat` round-trip; an epoch of a model with an odd parameter count (padded
  carry) equals the same steps one by one, and its state keeps the unpadded shapes.
- `backend_tuning` passes only options the jaxlib accepts.
- The guard, as a `lax.cond` branch and as a select, skips a step whose gradient alone is not
  finite, under jit and vmap; both forms train the same params.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mdn_jax import backend_tuning, flat_carry, forward, model, step, structures, train
from mdn_jax import mixture as mx
from mdn_jax.config import ModelConfig

ACTIVATIONS = ("softplus", "exp")


def x64():
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64

    return enable_x64()


def _options(components=4, out_features=3, **fields):
    base = dict(
        components=components,
        out_features=out_features,
        scale_floor=0.01,
        mean_activation="none",
        scale_activation="exp",
    )
    return {**base, **fields}


def _raw(rng, size, batch, case):
    if case == "ordinary":
        return rng.normal(0.0, 1.5, (batch, size))
    return np.where(rng.random((batch, size)) < 0.5, -60.0, 60.0)  # saturated everywhere


@pytest.mark.parametrize(
    "structure, activation, mean_activation, batch, case",
    [
        *itertools.product(["joint"], ACTIVATIONS, ["none"], (1, 200), ("ordinary", "extreme")),
        *itertools.product(["joint"], ["exp"], ["sigmoid"], [7], ("ordinary", "extreme")),
        *itertools.product(["per_dim", "full"], ["softplus"], ["sigmoid"], [200], ["extreme"]),
        *itertools.product(["per_dim", "full"], ["exp"], ["none"], [7], ["ordinary"]),
    ],
)
def test_transposed_log_prob_equals_the_mixture_in_float64(
    structure, activation, mean_activation, batch, case
):
    entry = structures.named(structure)
    options = _options(scale_activation=activation, mean_activation=mean_activation)
    size = entry.head_size(components=4, out_features=3)
    rng = np.random.default_rng(batch + len(case) + len(activation))
    with x64():
        raw = jnp.asarray(_raw(rng, size, batch, case))
        y = jnp.asarray(rng.uniform(0.0, 1.0, (batch, 3)))

        def got(r):
            return jnp.sum(entry.transposed_log_prob(r.T, y, **options))

        def want(r):
            return jnp.sum(mx.log_prob(entry.head_to_mixture(r, **options), y))

        value, grad = jax.jit(jax.value_and_grad(got))(raw)
        # Jitted too: one compile, not one per op (eager float64 ran for seconds per case).
        want_value, want_grad = jax.jit(jax.value_and_grad(want))(raw)
        assert np.isfinite(value) and np.all(np.isfinite(grad))
        np.testing.assert_allclose(value, want_value, rtol=1e-12)
        scale = float(np.max(np.abs(want_grad)))
        np.testing.assert_allclose(grad, want_grad, rtol=1e-10, atol=1e-12 * scale)
        per_sample = jax.jit(lambda r: entry.transposed_log_prob(r.T, y, **options))(raw)
        mixture = jax.jit(lambda r: mx.log_prob(entry.head_to_mixture(r, **options), y))(raw)
        np.testing.assert_allclose(per_sample, mixture, rtol=1e-12)


def test_transposed_joint_log_prob_under_vmap_and_in_float32():
    entry = structures.named("joint")
    options = _options()
    size = entry.head_size(components=4, out_features=3)
    rng = np.random.default_rng(3)
    raw = jnp.asarray(rng.normal(0, 1.5, (5, 9, size)), jnp.float32)  # [M, B, H]
    y = jnp.asarray(rng.uniform(0, 1, (5, 9, 3)), jnp.float32)
    got = jax.jit(jax.vmap(lambda r, t: entry.transposed_log_prob(r.T, t, **options)))(raw, y)
    want = jax.jit(lambda r, t: mx.log_prob(entry.head_to_mixture(r, **options), t))(raw, y)
    assert got.shape == (5, 9) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)


def test_transposed_forward_is_the_plain_forward_transposed():
    config = ModelConfig(
        hidden=(16, 8), components=3, input_offset=(0.5, 0.5), input_scale=(2.0, 2.0)
    )
    _, params = model.init(config, key=jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (11, 2))
    plain = forward.raw_outputs(config, params, x)
    transposed = jax.jit(lambda p, x: forward.raw_outputs(config, p, x, transposed=True))(params, x)
    assert transposed.shape == (model.head_size(config), 11)
    np.testing.assert_allclose(transposed, plain.T, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"^transposed raw outputs need inputs \[B, in\]"):
        forward.raw_outputs(config, params, x[None], transposed=True)


def test_model_loss_takes_the_transposed_path_only_where_it_applies(monkeypatch):
    calls = []
    entry = structures.named("joint")
    original = entry.transposed_log_prob

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    named = structures.named
    spied = dataclasses.replace(entry, transposed_log_prob=spy)
    monkeypatch.setattr(structures, "named", lambda name: spied if name == "joint" else named(name))
    config = ModelConfig(hidden=(8,), components=3)
    graphdef, params = model.init(config, key=jax.random.key(2))
    x = jax.random.uniform(jax.random.key(3), (6, 2))
    y = jax.random.uniform(jax.random.key(4), (6, 3))
    # Jitted (the spy records at trace time): one compile per call, not one per op.
    model_loss = jax.jit(
        functools.partial(step.model_loss, closed_form=False), static_argnums=(0, 1)
    )
    apply = jax.jit(model.apply, static_argnums=0)
    loss = model_loss(config, train.nll_loss, params, x, y)
    assert calls == [(model.head_size(config), 6)]
    np.testing.assert_allclose(loss, mx.nll(apply(graphdef, params, x), y), rtol=1e-6)
    model_loss(config, step.loss_named("discretised"), params, x, y)
    model_loss(config, train.nll_loss, params, x[None], y[None])
    assert len(calls) == 1  # the discretised loss and a [1, B, in] batch took the mixture path
    for structure in ("per_dim", "full"):  # their own hooks, the same loss as the mixture's
        config = ModelConfig(hidden=(8,), components=3, structure=structure)
        graphdef, params = model.init(config, key=jax.random.key(5))
        got = model_loss(config, train.nll_loss, params, x, y)
        want = mx.nll(apply(graphdef, params, x), y)
        np.testing.assert_allclose(got, want, rtol=1e-5)
        assert named(structure).transposed_log_prob is not None


def test_pad_flat_round_trips_and_leaves_other_leaves_alone():
    flat = jnp.arange(13.0)
    tree = (flat, {"mu": flat * 2, "count": jnp.zeros((), jnp.int32), "other": jnp.ones(3)})
    padded = flat_carry.pad_flat(tree, 13)
    assert padded[0].shape == (16,) and padded[1]["mu"].shape == (16,)
    assert padded[1]["other"].shape == (3,) and padded[1]["count"].shape == ()
    np.testing.assert_array_equal(padded[0][13:], 0.0)
    back = flat_carry.unpad_flat(padded, 13)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(tree)):
        np.testing.assert_array_equal(a, b)
    aligned = (jnp.arange(16.0),)
    assert flat_carry.pad_flat(aligned, 16) is aligned


def test_an_epoch_with_a_padded_carry_equals_its_steps_one_by_one():
    """A one-component head on a small trunk has an odd parameter count, so the epoch pads."""
    config = ModelConfig(hidden=(9, 7), components=1, scale_floor=0.01)
    graphdef, params = model.init(config, key=jax.random.key(5))
    size = flat_carry.flat_size(params)
    assert size % flat_carry.FLAT_ALIGNMENT != 0
    trainer = train.Trainer(graphdef, train.make_optimizer(train.TrainConfig(), total_steps=8))
    rng = np.random.default_rng(6)
    xs = jnp.asarray(rng.uniform(-1, 1, (40, 2)), jnp.float32)
    ys = jnp.asarray(rng.uniform(0, 1, (40, 3)), jnp.float32)
    batches = train.shuffled_batches(jax.random.key(7), 40, 10)
    state, losses = trainer.epoch(trainer.init(params, key=jax.random.key(8)), xs, ys, batches)
    one_by_one = trainer.init(params, key=jax.random.key(8))
    for index, rows in enumerate(batches):
        one_by_one, loss = trainer.step(one_by_one, xs[rows], ys[rows])
        np.testing.assert_allclose(losses[index], loss, rtol=1e-5)
    assert int(state.step) == int(one_by_one.step) == len(batches)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(one_by_one)):
        assert a.shape == b.shape  # the optimiser state is stored unpadded
        if jnp.issubdtype(a.dtype, jnp.floating):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert jax.tree.leaves(state.opt_state)[1].shape == (size,)


def test_backend_tuning_passes_only_accepted_options(monkeypatch):
    monkeypatch.setitem(
        backend_tuning.OPTIONS,
        "cpu",
        {"xla_cpu_experimental_ynn_fusion_type": "", "xla_no_such_option_at_all": 1},
    )
    backend_tuning.options_for.cache_clear()
    try:
        got = backend_tuning.options_for("cpu")
    finally:
        backend_tuning.options_for.cache_clear()
    assert "xla_no_such_option_at_all" not in got
    assert backend_tuning.options_for("no-such-backend") == {}

    @backend_tuning.tuned_jit
    def double(x):
        return 2 * x

    np.testing.assert_array_equal(double(jnp.arange(3.0)), [0.0, 2.0, 4.0])
    assert "ENTRY" in double.lower(jnp.arange(3.0)).compile().as_text()


@pytest.mark.parametrize("method", ["mode", "mean", "uncertainty", "components"])
def test_grouped_render_tiles_equal_single_tiles(method, monkeypatch):
    """`render_tiles.TILES_PER_STEP` tiles per step of the map give bit for bit the values of
    one tile per step (every method but 'sample', which maps single tiles)."""
    from mdn_jax import render, render_tiles

    config = ModelConfig(hidden=(16, 16), components=3, input_offset=(60.0, 60.0))
    graphdef, params = model.init(config, key=jax.random.key(0))
    options = dict(height=97, width=131, method=method, key=jax.random.key(5), num_samples=2)
    assert render_tiles.TILES_PER_STEP > 1
    grouped = render.render_values(graphdef, params, **options)
    monkeypatch.setattr(render_tiles, "TILES_PER_STEP", 1)
    monkeypatch.setattr(render_tiles.render_chunk, "_jitted", None)  # trace again
    single = render.render_values(graphdef, params, **options)
    monkeypatch.undo()
    render_tiles.render_chunk._jitted = None
    np.testing.assert_array_equal(grouped, single)


def test_batch_chains_on_cpu():
    if jax.default_backend() != "cpu":
        pytest.skip("CPU tuning")
    assert backend_tuning.batch_chains(4096) == backend_tuning.batch_chains(2048) == 2
    assert backend_tuning.batch_chains(200) == backend_tuning.batch_chains(4097) == 1


def test_a_split_batch_has_the_loss_and_gradient_of_the_whole(monkeypatch):
    """Where `batch_chains` splits the batch, the loss (and its gradient) is the whole batch's
    up to float32 summation order (the head runs in float32); only for built-in losses, models
    without dropout and one device."""
    from jax.flatten_util import ravel_pytree

    from mdn_jax import parallel

    monkeypatch.setattr(backend_tuning, "batch_chains", lambda size: 2 if size % 2 == 0 else 1)
    calls = []
    model_loss = step.model_loss

    def counted(*args, **kwargs):
        calls.append(args[3].shape[0])
        return model_loss(*args, **kwargs)

    monkeypatch.setattr(step, "model_loss", counted)
    one = parallel.Placement(None)
    config = ModelConfig(hidden=(8, 8), components=3)
    _, params = model.init(config, key=jax.random.key(0))
    flat, unravel = ravel_pytree(params)
    x = jax.random.uniform(jax.random.key(1), (64, 2))
    y = jax.random.uniform(jax.random.key(2), (64, 3))
    for loss in (train.nll_loss, step.loss_named("discretised")):
        calls.clear()
        split = step._flat_loss(config, loss, unravel, placement=one)
        whole = lambda f: model_loss(config, loss, unravel(f), x, y)  # noqa: B023, E731
        value, grad = jax.jit(jax.value_and_grad(lambda f: split(f, x, y, None)))(flat)
        assert calls == [32, 32]
        want_value, want_grad = jax.jit(jax.value_and_grad(whole))(flat)
        np.testing.assert_allclose(value, want_value, rtol=1e-6)
        scale = float(np.max(np.abs(want_grad)))
        np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-6 * scale)
    for kwargs, loss in (
        ({}, train.nll_loss),  # no placement given: not known to be one device
        ({"placement": one}, lambda mixture, y: jnp.mean(jnp.abs(mx.mean(mixture) - y))),
    ):
        calls.clear()
        step._flat_loss(config, loss, unravel, **kwargs)(flat, x, y, None)
        assert calls == [64]
    dropout = ModelConfig(hidden=(8, 8), components=3, dropout=0.1)
    calls.clear()
    step._flat_loss(dropout, train.nll_loss, unravel, placement=one)(flat, x, y, jax.random.key(3))
    assert calls == [64]


@pytest.mark.parametrize("branch", [True, False], ids=["cond", "select"])
def test_the_guard_skips_a_step_whose_gradient_alone_is_not_finite_under_jit_and_vmap(
    branch, monkeypatch
):
    """`guarded_update`, in both forms (`backend_tuning.guard_as_branch`: a `lax.cond` branch on
    CPU, a select elsewhere): a finite loss with an infinite gradient (sqrt at 0) leaves params
    and Adam's state exactly as they were and reports NaN; a finite step equals optax's own
    update. Under vmap (the cond becomes a select) each member is judged on its own."""
    monkeypatch.setattr(backend_tuning, "guard_as_branch", lambda: branch)
    optimizer = optax.adam(1e-2)

    def loss_of_flat(flat, x, y):
        return jnp.sum(jnp.sqrt(jnp.abs(flat) + x)) + y

    def update(flat, x):
        opt_state = optimizer.init(flat)
        return (opt_state, *step.guarded_update(loss_of_flat, optimizer, flat, opt_state, x, 0.0))

    flat = jnp.array([0.0, 1.0, 4.0, 9.0])
    before, new_flat, new_state, loss = jax.jit(update)(flat, 0.0)  # d sqrt(|0|)/d0 = inf
    assert np.isnan(loss)
    np.testing.assert_array_equal(new_flat, flat)
    for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(before)):
        np.testing.assert_array_equal(a, b)
    before, new_flat, new_state, loss = jax.jit(update)(flat, 1.0)  # finite everywhere
    grads = jax.grad(loss_of_flat)(flat, 1.0, 0.0)
    updates, want_state = optimizer.update(grads, before, flat)
    np.testing.assert_allclose(loss, loss_of_flat(flat, 1.0, 0.0), rtol=1e-6)
    np.testing.assert_allclose(new_flat, optax.apply_updates(flat, updates), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(want_state)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    flats = jnp.stack([flat, flat + 1.0])  # member 1 has no zero: its step is applied
    _, new_flats, _, losses = jax.jit(jax.vmap(update, in_axes=(0, None)))(flats, 0.0)
    assert np.isnan(losses[0]) and np.isfinite(losses[1])
    np.testing.assert_array_equal(new_flats[0], flat)
    assert not np.any(new_flats[1] == flats[1])


def test_both_guard_forms_train_the_same_params(monkeypatch):
    """Three epochs of a small model with the guard as a cond branch and as a select: the same
    params and losses (bit-identical on the 2-core Xeon, for the reference model too; asserted
    to float32 rounding, since that is all either form promises across CPUs)."""
    config = ModelConfig(hidden=(16, 8), components=3)
    graphdef, params = model.init(config, key=jax.random.key(9))
    rng = np.random.default_rng(10)
    xs = jnp.asarray(rng.uniform(-1, 1, (96, 2)), jnp.float32)
    ys = jnp.asarray(rng.uniform(0, 1, (96, 3)), jnp.float32)
    results = []
    for branch in (True, False):
        monkeypatch.setattr(backend_tuning, "guard_as_branch", lambda b=branch: b)
        trainer = train.Trainer(graphdef, train.make_optimizer(train.TrainConfig(), total_steps=9))
        state = trainer.init(params, key=jax.random.key(11))
        for epoch in range(3):
            batches = train.shuffled_batches(jax.random.key(epoch), 96, 32)
            state, losses = trainer.epoch(state, xs, ys, batches)
        results.append((jax.tree.leaves(state.params), losses))
    (params_a, losses_a), (params_b, losses_b) = results
    np.testing.assert_allclose(losses_a, losses_b, rtol=1e-6)
    for a, b in zip(params_a, params_b):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
