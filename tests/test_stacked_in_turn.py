"""How the stacked epoch runs its members (mdn_jax.stacked, issue 14 item 6): in turn
(groups, `mdn_jax.stacked_in_turn`, CPU) or batched (`vmap`, accelerators), both equal to
`train.fit` alone; what all members share is left out of the compiled epoch
(`stacked_members.shared`); the host draws every member's shuffle exactly as
`step.shuffled_batches` does.

Tolerance: as tests/test_stacked.py, 1e-5 absolute on params and optimiser moments (float32
summation order may differ between a batched and a plain matmul, nothing else).
"""

import jax
import numpy as np
import pytest

from mdn_jax import model as mdl
from mdn_jax import stacked, step
from mdn_jax import stacked_members as sm
from mdn_jax import train as tr

ATOL = 1e-5


def _toy(n=150, seed=0):
    rng = np.random.default_rng(seed)
    xs = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    ys = np.concatenate([np.sin(3 * xs[:, :1]), np.cos(2 * xs[:, 1:])], axis=1)
    return xs, (ys + 0.1 * rng.normal(size=ys.shape)).astype(np.float32)


def _model(**overrides):
    values = dict(in_features=2, out_features=2, hidden=(12, 8), components=3)
    return mdl.ModelConfig(**{**values, **overrides})


def _max_difference(a, b) -> float:
    return max(
        float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_cpu_runs_members_in_turn_and_accelerators_batch_them():
    assert stacked.members_in_turn("cpu")
    assert not stacked.members_in_turn("gpu") and not stacked.members_in_turn("tpu")


@pytest.mark.parametrize("in_turn", [True, False])
def test_both_layouts_equal_fit_alone(monkeypatch, in_turn):
    """Members differing in widths, floor and rate (nothing shared), in turn and under `vmap`."""
    monkeypatch.setattr(stacked, "members_in_turn", lambda backend=None: in_turn)
    xs, ys = _toy()
    model_configs = [_model(scale_floor=1e-3), _model(hidden=(6, 10), scale_floor=3e-2)]
    train_configs = [
        tr.TrainConfig(epochs=2, batch_size=32, seed=seed, learning_rate=rate)
        for seed, rate in ((0, 1e-3), (3, 3e-3))
    ]
    fit = stacked.fit_stacked(xs, ys, model_configs=model_configs, train_configs=train_configs)
    assert fit.size == 2 and len(fit.history) == 2
    for m, (model_config, train_config) in enumerate(zip(model_configs, train_configs)):
        alone = tr.fit(xs, ys, model_config=model_config, train_config=train_config)
        member = fit.member(m)
        assert _max_difference(member.params, alone.params) < ATOL, (in_turn, m)
        assert _max_difference(member.state.opt_state, alone.state.opt_state) < ATOL, (in_turn, m)


def test_shared_settings_are_found_on_the_host():
    same = [_model(), _model()]
    rates = [tr.TrainConfig(learning_rate=2e-3, seed=s) for s in (0, 1)]
    assert sm.shared(same, rates, sm.wide_config(same)) == sm.Shared(True, True, 2e-3, True)
    mixed = [_model(), _model(hidden=(6, 8), scale_floor=0.05)]
    varied = [tr.TrainConfig(learning_rate=r) for r in (1e-3, 3e-3)]
    assert sm.shared(mixed, varied, sm.wide_config(mixed)) == sm.Shared(False, False, None, True)
    dropouts = [_model(dropout=0.1), _model(dropout=0.0)]
    assert sm.shared(dropouts, rates, sm.wide_config(dropouts)) == sm.Shared(
        True, True, 2e-3, False
    )
    # The shared rate is built into the shared optimiser; otherwise that is built with rate 1.
    assert (
        sm.base_train_config(rates[0], shared=sm.Shared(learning_rate=2e-3)).learning_rate == 2e-3
    )
    assert sm.base_train_config(rates[0]).learning_rate == 1.0


def test_uniform_members_leave_mask_shift_and_rate_out_of_the_optimiser():
    """Same optimiser state either way (checkpoints keep their shape); shared: a plain chain."""
    base = step.make_optimizer(tr.TrainConfig(), total_steps=10)
    settings = sm.Settings(np.float32(0), np.float32(5.0), np.zeros(3, np.float32))
    flat = np.ones(3, np.float32)
    general = sm.member_optimizer(base, settings)
    plain = sm.member_optimizer(base, settings, shared=sm.Shared(True, True, 1e-3))
    assert jax.tree.structure(general.init(flat)) == jax.tree.structure(plain.init(flat))
    grads = np.array([1.0, -2.0, 3.0], np.float32)
    masked, _ = general.update(grads, general.init(flat), flat)
    assert not np.asarray(masked).any()  # the mask zeroes every entry here
    alone, _ = base.update(grads, base.init(flat), flat)
    through, _ = plain.update(grads, plain.init(flat), flat)
    np.testing.assert_array_equal(np.asarray(through), np.asarray(alone))


@pytest.mark.parametrize("num_samples,batch_size", [(150, 32), (81920, 200), (64, 64)])
def test_member_batches_are_each_keys_shuffled_batches(num_samples, batch_size):
    keys = jax.random.split(jax.random.key(7), 3)
    bits = np.asarray(jax.random.key_data(keys))
    batches = sm.member_batches(bits, num_samples, batch_size)
    assert batches.dtype == np.int32
    for key, own in zip(keys, batches, strict=True):
        np.testing.assert_array_equal(own, step.shuffled_batches(key, num_samples, batch_size))


def test_shuffles_follow_fits_key_chain():
    """Epoch after epoch, the keys and batches `fit` would draw from each member's key."""
    keys = jax.random.split(jax.random.key(3), 2)
    shuffles = sm.Shuffles(keys, 100, 30)
    expected = list(keys)
    for _ in range(3):
        state_keys, batches = shuffles.take()
        shuffles.draw()
        for m, key in enumerate(expected):
            key, epoch_key = jax.random.split(key)
            np.testing.assert_array_equal(batches[m], step.shuffled_batches(epoch_key, 100, 30))
            assert np.array_equal(jax.random.key_data(state_keys[m]), jax.random.key_data(key))
            expected[m] = key
