"""Stacked training (mdn_jax.stacked): M members in one compiled epoch, each equal to the same
model trained alone with `train.fit` (same seed, so the same init and shuffle).

Tolerance: members are compared with `fit` after a few epochs at 1e-5 absolute on every param
and optimiser moment and 1e-5 relative on the losses: the stacked program batches the members'
matrix products (and pads narrower ones with exact zeros), which may change float32 summation
order, nothing else.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdn_jax import mixture as mx
from mdn_jax import model as mdl
from mdn_jax import stacked, structures
from mdn_jax import stacked_members as sm
from mdn_jax import train as tr

ATOL = 1e-5


def _toy(n=200, seed=0):
    rng = np.random.default_rng(seed)
    xs = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    ys = np.concatenate([np.sin(3 * xs[:, :1]), np.cos(2 * xs[:, 1:])], axis=1)
    return xs, (ys + 0.1 * rng.normal(size=ys.shape)).astype(np.float32)


def _max_difference(a, b) -> float:
    return max(
        float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def _model(**overrides):
    values = dict(in_features=2, out_features=2, hidden=(12, 8), components=3)
    return mdl.ModelConfig(**{**values, **overrides})


def _assert_members_match(fit, xs, ys, model_configs, train_configs, *, first=0):
    for m, (model_config, train_config) in enumerate(zip(model_configs, train_configs), first):
        alone = tr.fit(xs, ys, model_config=model_config, train_config=train_config)
        member = fit.member(m)
        assert member.model_config == alone.model_config
        assert jax.tree.map(np.shape, member.params) == jax.tree.map(np.shape, alone.params)
        assert _max_difference(member.params, alone.params) < ATOL, m
        assert _max_difference(member.state.opt_state, alone.state.opt_state) < ATOL, m
        np.testing.assert_allclose(
            [r["loss"] for r in member.history], [r["loss"] for r in alone.history], rtol=1e-5
        )
        x = jnp.asarray(xs[:7])
        stacked_mixture = jax.tree.map(lambda a: a[m], fit.predict(x))
        np.testing.assert_allclose(
            mx.log_prob(stacked_mixture, ys[:7]),
            mx.log_prob(alone.predict(x), ys[:7]),
            rtol=1e-4,
            atol=1e-4,
        )


def test_members_of_different_widths_rates_floors_and_seeds_equal_fit_alone():
    xs, ys = _toy()
    model_configs = [
        _model(hidden=(12, 8), scale_floor=1e-3),
        _model(hidden=(6, 10), scale_floor=3e-2),
        _model(hidden=(12, 10), scale_floor=1e-3, head_init_scale=0.5),
    ]
    train_configs = [
        tr.TrainConfig(epochs=3, batch_size=64, seed=seed, learning_rate=rate, clip_norm=1.0)
        for seed, rate in ((0, 1e-3), (1, 3e-3), (5, 2e-3))
    ]
    fit = stacked.fit_stacked(xs, ys, model_configs=model_configs, train_configs=train_configs)
    assert len(fit.history) == 3 and len(fit.history[0]["member_losses"]) == 3
    assert all(leaf.shape[0] == 3 for leaf in jax.tree.leaves(fit.params))
    _assert_members_match(fit, xs, ys, fit.model_configs, train_configs)
    # Padding stays exactly zero: member 1 (6, 10) inside the padded (12, 10).
    kernel = np.asarray(fit.params["trunk"][1]["kernel"][...])  # [M, 12, 10]
    assert kernel.shape == (3, 12, 10) and kernel[2, 6:].any()
    assert (
        not kernel[1, 6:].any() and not np.asarray(fit.params["trunk"][0]["bias"][...])[1, 6:].any()
    )
    assert not np.asarray(fit.params["head"]["linear"]["kernel"][...])[0, 8:].any()
    with pytest.raises(ValueError, match="members 0..2"):
        fit.member(3)


@pytest.mark.parametrize("structure", structures.NAMES)
def test_shift_floor_moves_exactly_the_floored_scales(structure):
    config = _model(structure=structure, scale_floor=1e-3)
    size = mdl.head_size(config)
    raw = jax.random.normal(jax.random.key(0), (5, size))
    options = dict(components=3, out_features=2, mean_activation="none")
    low = mdl.head_to_mixture(raw, structure=structure, scale_floor=1e-3, **options)
    high = mdl.head_to_mixture(raw, structure=structure, scale_floor=0.05, **options)
    shifted = jax.jit(lambda m, s: sm.shift_floor(m, s, config=config))(low, 0.05 - 1e-3)
    for a, b in zip(jax.tree.leaves(shifted), jax.tree.leaves(high), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_full_covariance_member_with_its_own_floor_and_a_schedule_equals_fit_alone():
    xs, ys = _toy(120)
    model_configs = [_model(structure="full", hidden=(8,), scale_floor=f) for f in (1e-3, 0.05)]
    train_config = tr.TrainConfig(epochs=2, batch_size=40, schedule="warmup_cosine")
    train_configs = [dataclasses.replace(train_config, seed=seed) for seed in (3, 4)]
    fit = stacked.fit_stacked(xs, ys, model_configs=model_configs, train_configs=train_configs)
    _assert_members_match(fit, xs, ys, fit.model_configs[1:], train_configs[1:], first=1)
    # The second member's floor is in force: no Cholesky diagonal below it.
    floored = structures.named("full").floored_scales(fit.member(1).predict(xs))
    assert float(jnp.min(floored)) >= 0.05


def test_members_that_cannot_share_a_program_are_refused():
    xs, ys = _toy(50)
    config = tr.TrainConfig(epochs=1, batch_size=10)
    with pytest.raises(ValueError, match="differ in model setting components"):
        stacked.fit_stacked(
            xs, ys, model_configs=[_model(), _model(components=4)], train_configs=config
        )
    with pytest.raises(ValueError, match="same depth"):
        stacked.fit_stacked(
            xs, ys, model_configs=[_model(), _model(hidden=(8,))], train_configs=config
        )
    with pytest.raises(ValueError, match="differ in train setting batch_size"):
        stacked.fit_stacked(
            xs,
            ys,
            model_configs=[_model(), _model()],
            train_configs=[config, dataclasses.replace(config, batch_size=5)],
        )
    with pytest.raises(ValueError, match="2 model configs but 1 train configs"):
        stacked.fit_stacked(xs, ys, model_configs=[_model(), _model()], train_configs=[config])


def test_guard_works_per_member():
    """Member 0's rate blows it up: its bad steps are skipped (or stop the fit, naming it), and
    member 1 trains exactly as it would alone."""
    xs, ys = _toy(100)
    model_configs = [_model(hidden=(8,)), _model(hidden=(8,))]
    config = tr.TrainConfig(epochs=2, batch_size=25, on_nonfinite="skip")
    train_configs = [
        dataclasses.replace(config, learning_rate=1e30),
        dataclasses.replace(config, seed=1),
    ]
    fit = stacked.fit_stacked(xs, ys, model_configs=model_configs, train_configs=train_configs)
    skipped = [record["skipped_steps"] for record in fit.history]
    assert all(s[0] > 0 and s[1] == 0 for s in skipped), skipped
    alone = tr.fit(xs, ys, model_config=fit.model_configs[0], train_config=train_configs[0])
    assert [s[0] for s in skipped] == [r["skipped_steps"] for r in alone.history]
    _assert_members_match_one(fit, 1, xs, ys, train_configs[1])
    # With 'stop' the host names the first member with a skipped step (here member 1).
    losses = np.array([[1.0, 2.0], [1.0, np.nan]])
    stop = dataclasses.replace(config, on_nonfinite="stop")
    with pytest.raises(tr.NonFiniteError, match=r"^non-finite loss or gradient in member 1, "):
        stacked.stacked_record(3, losses, 1.0, stop, targets=ys)
    record = stacked.stacked_record(3, losses, 1.0, config, targets=ys)
    assert record["member_losses"] == [1.5, 1.0] and record["skipped_steps"] == [0, 1]


def _assert_members_match_one(fit, m, xs, ys, train_config):
    alone = tr.fit(xs, ys, model_config=fit.model_configs[m], train_config=train_config)
    assert _max_difference(fit.member(m).params, alone.params) < ATOL


def test_resume_from_a_checkpoint_is_bit_identical(tmp_path):
    from mdn_jax import stacked_checkpoint as sc

    xs, ys = _toy(120)
    model_configs = [_model(hidden=(8, 4)), _model(hidden=(5, 6), scale_floor=0.02)]
    config = tr.TrainConfig(epochs=3, batch_size=40, schedule="cosine")
    train_configs = [config, dataclasses.replace(config, seed=7, learning_rate=3e-3)]
    whole = stacked.fit_stacked(xs, ys, model_configs=model_configs, train_configs=train_configs)

    def save_and_stop(report):
        sc.save_stacked(
            tmp_path,
            state=report.state,
            model_configs=whole.model_configs,
            train_configs=train_configs,
            epoch=report.epoch,
            num_samples=len(xs),
            history=[dict(report.record)],
        )
        return report.epoch == 2

    stacked.fit_stacked(
        xs, ys, model_configs=model_configs, train_configs=train_configs, callbacks=[save_and_stop]
    )
    assert sc.is_stacked(tmp_path)
    restored = sc.restore_stacked(tmp_path)
    assert restored.epoch == 2 and restored.model_configs == whole.model_configs
    resumed = stacked.fit_stacked(
        xs,
        ys,
        model_configs=restored.model_configs,
        train_configs=restored.train_configs,
        state=restored.state,
        start_epoch=restored.epoch,
    )
    for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(whole.state), strict=True):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert resumed.history[0]["member_losses"] == whole.history[2]["member_losses"]
    assert restored.fit().member(1).model_config == whole.model_configs[1]


DEVICES = 4


def _four_device_checks() -> dict:
    """In a process with 4 emulated CPU devices: a stacked fit on 4 devices against 1."""
    xs, ys = _toy(160)
    model_configs = [_model(hidden=(8, 4)), _model(hidden=(6, 6), scale_floor=0.02)]
    config = tr.TrainConfig(epochs=2, batch_size=40)
    train_configs = [config, dataclasses.replace(config, seed=3, learning_rate=3e-3)]
    fits = {
        devices: stacked.fit_stacked(
            xs, ys, model_configs=model_configs, train_configs=train_configs, devices=devices
        )
        for devices in (1, DEVICES)
    }
    kernel = fits[DEVICES].params["trunk"][0]["kernel"][...]
    return {
        "devices": jax.device_count(),
        "difference": _max_difference(fits[1].params, fits[DEVICES].params),
        "placed_on": len(kernel.sharding.device_set),
        "replicated": bool(kernel.is_fully_replicated),
    }


def test_stacked_fit_on_four_devices_equals_one():
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={DEVICES}"}
    done = subprocess.run(
        [sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["devices"] == DEVICES
    assert result["placed_on"] == DEVICES and result["replicated"]  # the model axis: replicated
    assert result["difference"] < ATOL


if __name__ == "__main__":
    import json

    print(json.dumps(_four_device_checks()))
