"""Dropout on the trunk's hidden layers (ModelConfig.dropout, --dropout): training only, keyed
per step from the train state's key, a rate of 0 exactly today's step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdn_jax import cli, forward, model, step, train
from mdn_jax.config import ModelConfig


def _toy(n=256, seed=0):
    rng = np.random.default_rng(seed)
    xs = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    ys = np.concatenate([np.sin(3 * xs[:, :1]), np.cos(2 * xs[:, 1:])], axis=1)
    return xs, (ys + 0.1 * rng.normal(size=ys.shape)).astype(np.float32)


def _config(rate, **fields):
    return ModelConfig(hidden=(32, 16), components=3, out_features=2, dropout=rate, **fields)


def _leaves(tree):
    """Every leaf as numpy (PRNG keys as their bits)."""
    return [
        np.asarray(jax.random.key_data(leaf))
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)
        else np.asarray(leaf)
        for leaf in jax.tree_util.tree_leaves(tree)
    ]


def test_rate_zero_is_no_dropout_bit_for_bit():
    config = _config(0.0)
    _, params = model.init(config, key=jax.random.key(0))
    xs, _ = _toy()
    plain = jax.jit(lambda p: forward.raw_outputs(config, p, xs))(params)
    # The dropout function at a (traced) rate of 0 keeps every entry exactly.
    zero = jax.jit(
        lambda p, r: forward.raw_outputs(config, p, xs, dropout_rate=r, key=jax.random.key(5))
    )(params, 0.0)
    np.testing.assert_array_equal(np.asarray(zero), np.asarray(plain))


def test_rate_zero_compiles_no_random_numbers():
    xs, ys = map(jnp.asarray, _toy())
    for rate, wanted in ((0.0, False), (0.25, True)):
        graphdef, params = model.init(_config(rate), key=jax.random.key(0))
        optimizer = train.make_optimizer(train.TrainConfig(), total_steps=10)
        state = step.init_state(params, optimizer, key=jax.random.key(1))
        batches = train.shuffled_batches(jax.random.key(2), xs.shape[0], 64)
        bound = (graphdef, optimizer, train.nll_loss, step.parallel.Placement(None))
        epoch_text = str(
            jax.make_jaxpr(lambda s: step.train_epoch(*bound, s, xs, ys, batches))(state)
        )
        step_text = str(
            jax.make_jaxpr(lambda s: step.train_step(*bound, s, xs[:64], ys[:64]))(state)
        )
        for text in (epoch_text, step_text):
            assert ("random_bits" in text or "threefry" in text) is wanted, rate


def test_dropout_changes_training_and_same_seed_gives_same_result():
    xs, ys = _toy()
    train_config = train.TrainConfig(epochs=2, batch_size=64)
    runs = [
        train.fit(xs, ys, model_config=_config(rate), train_config=train_config)
        for rate in (0.3, 0.3, 0.0)
    ]
    first, again, without = (_leaves(run.state.params) for run in runs)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(first, without))
    assert np.isfinite(runs[0].history[-1]["loss"])


def test_resume_with_dropout_is_bit_identical():
    xs, ys = _toy()
    config = _config(0.2)

    def run(epochs, **resume):
        return train.fit(
            xs,
            ys,
            model_config=config,
            train_config=train.TrainConfig(epochs=epochs, batch_size=64),
            **resume,
        )

    straight = run(4)
    half = run(2)
    resumed = run(4, state=half.state, start_epoch=2)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history[2:]]
    for a, b in zip(_leaves(resumed.state), _leaves(straight.state)):
        np.testing.assert_array_equal(a, b)


def test_trainer_step_with_dropout_equals_the_scanned_epoch():
    """Trainer.step keys its masks from (state.key, state.step) just like the epoch's scan."""
    xs, ys = _toy(n=192)
    graphdef, params = model.init(_config(0.4), key=jax.random.key(0))
    trainer = train.Trainer(graphdef, train.make_optimizer(train.TrainConfig(), total_steps=9))
    batches = train.shuffled_batches(jax.random.key(1), xs.shape[0], 64)
    looped = trainer.init(params, key=jax.random.key(2))
    for indices in batches:
        looped, _ = trainer.step(looped, jnp.asarray(xs[indices]), jnp.asarray(ys[indices]))
    scanned, _ = trainer.epoch(trainer.init(params, key=jax.random.key(2)), xs, ys, batches)
    for a, b in zip(_leaves(scanned.params), _leaves(looped.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_evaluation_is_deterministic_and_has_no_dropout():
    graphdef, params = model.init(_config(0.5), key=jax.random.key(0))
    plain_graphdef, _ = model.init(_config(0.0), key=jax.random.key(0))
    xs, _ = _toy()
    once = model.apply(graphdef, params, xs)
    twice = model.apply(graphdef, params, xs)
    without = model.apply(plain_graphdef, params, xs)
    for a, b, c in zip(once, twice, without):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_kept_fraction_and_scaling(rate):
    """Each entry kept with probability 1 - rate (binomial: within 5 standard deviations of
    200,000 draws, about 0.005 at most) and scaled by 1 / (1 - rate)."""
    x = jnp.ones((400, 500))
    out = np.asarray(jax.jit(forward.dropout)(x, jax.random.key(7), rate))
    kept = out != 0
    tolerance = 5 * np.sqrt(rate * (1 - rate) / x.size)
    assert abs(kept.mean() - (1 - rate)) < tolerance
    np.testing.assert_allclose(out[kept], 1.0 / (1.0 - rate), rtol=1e-6)
    # Rows and columns drop independently: no whole row or column is (nearly) all dropped.
    assert kept.mean(axis=1).min() > (1 - rate) - 0.2 or rate == 0.9


def test_masks_differ_between_steps_and_layers():
    key = jax.random.key(3)
    a = forward.dropout(jnp.ones(1000), forward.step_key(key, 0), 0.5)
    b = forward.dropout(jnp.ones(1000), forward.step_key(key, 1), 0.5)
    assert not np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5, float("nan"), True, "0.1"])
def test_bad_rates_give_one_line_errors(rate):
    with pytest.raises(ValueError, match=r"^dropout must be a number in \[0, 1\), got") as error:
        _config(rate)
    assert "\n" not in str(error.value)


def test_cli_dropout_flag(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--dropout", "1", "nowhere.png"])
    err = capsys.readouterr().err.strip().splitlines()
    assert "expected a number in [0, 1), got '1'" in err[-1]
