"""Training: scan equals a Python loop, shuffling, determinism, learning, input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdn_jax import data, model, train


def _leaves(tree):
    return [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(tree)]


def _toy(n=300, seed=0):
    rng = np.random.default_rng(seed)
    xs = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    ys = np.concatenate([np.sin(3 * xs[:, :1]), np.cos(2 * xs[:, 1:])], axis=1)
    ys = (ys + 0.1 * rng.normal(size=ys.shape)).astype(np.float32)
    return xs, ys


@pytest.mark.parametrize("structure", model.STRUCTURES)
def test_scanned_epoch_equals_python_loop_of_jitted_steps(structure):
    xs, ys = _toy()
    config = model.ModelConfig(hidden=(16, 16), components=3, out_features=2, structure=structure)
    graphdef, params = model.init(config, key=jax.random.key(0))
    optimizer = train.make_optimizer(train.TrainConfig(clip_norm=1.0), total_steps=100)
    trainer = train.Trainer(graphdef, optimizer)
    batches = train.shuffled_batches(jax.random.key(1), xs.shape[0], 64)  # 300 = 4 * 64 + 44: wraps

    looped = trainer.init(params, key=jax.random.key(2))
    loop_losses = []
    for indices in batches:
        looped, loss = trainer.step(looped, jnp.asarray(xs[indices]), jnp.asarray(ys[indices]))
        loop_losses.append(float(loss))

    scanned = trainer.init(params, key=jax.random.key(2))
    scanned, scan_losses = trainer.epoch(scanned, jnp.asarray(xs), jnp.asarray(ys), batches)

    assert int(scanned.step) == int(looped.step) == len(batches)
    np.testing.assert_allclose(np.asarray(scan_losses), loop_losses, rtol=1e-5, atol=1e-6)
    for a, b in zip(_leaves(scanned.params), _leaves(looped.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(_leaves(scanned.opt_state), _leaves(looped.opt_state)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # And training moved the params at all.
    assert not all(np.array_equal(a, b) for a, b in zip(_leaves(scanned.params), _leaves(params)))


def test_shuffled_batches_cover_every_sample_and_wrap_the_last_batch():
    batches = train.shuffled_batches(jax.random.key(0), 10, 4)
    assert batches.shape == (3, 4) and batches.dtype == np.int32
    flat = batches.ravel()
    assert sorted(set(flat.tolist())) == list(range(10))
    np.testing.assert_array_equal(flat[10:], flat[:2])  # the wrap-around fill
    again = train.shuffled_batches(jax.random.key(0), 10, 4)
    other = train.shuffled_batches(jax.random.key(1), 10, 4)
    np.testing.assert_array_equal(batches, again)
    assert not np.array_equal(batches, other)


def test_fit_is_deterministic_for_a_seed():
    xs, ys = _toy(200)
    kwargs = dict(
        model_config=model.ModelConfig(in_features=2, out_features=2, hidden=(8,), components=2),
        train_config=train.TrainConfig(epochs=2, batch_size=50, seed=5),
    )
    a = train.fit(xs, ys, **kwargs)
    b = train.fit(xs, ys, **kwargs)
    for x, y in zip(_leaves(a.params), _leaves(b.params)):
        np.testing.assert_array_equal(x, y)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]


def test_fit_records_input_normalisation_and_runs_callbacks():
    xs, ys = _toy(200)
    seen = []
    result = train.fit(
        xs * 10 + 3,
        ys,
        model_config=model.ModelConfig(in_features=2, out_features=2, hidden=(8,)),
        train_config=train.TrainConfig(epochs=3, batch_size=50),
        callbacks=[lambda report: seen.append(report.epoch) or report.epoch == 2],
    )
    assert seen == [1, 2]  # returning True after epoch 2 stops training
    assert len(result.history) == 2
    np.testing.assert_allclose(result.model_config.input_offset, (xs * 10 + 3).mean(0), rtol=1e-4)
    np.testing.assert_allclose(result.model_config.input_scale, (xs * 10 + 3).std(0), rtol=1e-4)


def test_callback_mappings_join_the_one_history_record_of_each_epoch():
    xs, ys = _toy(200)
    seen = []
    result = train.fit(
        xs,
        ys,
        model_config=model.ModelConfig(in_features=2, out_features=2, hidden=(8,)),
        train_config=train.TrainConfig(epochs=2, batch_size=50),
        callbacks=[
            lambda report: {"double_epoch": 2 * report.epoch},
            lambda report: seen.append(dict(report.record)),
        ],
    )
    assert [record["double_epoch"] for record in seen] == [2, 4]  # later callbacks see it
    assert result.history == seen  # and the history holds that same record, once per epoch
    assert list(seen[0]) == ["epoch", "loss", "seconds", "samples_per_second", "double_epoch"]


@pytest.mark.parametrize(
    "xs, ys, message",
    [
        (np.zeros((10, 2)), np.zeros((9, 3)), "same number of rows"),
        (np.zeros((0, 2)), np.zeros((0, 3)), "no training data"),
        (np.full((10, 2), np.nan), np.zeros((10, 3)), "NaN"),
        (np.zeros((10, 2, 2)), np.zeros((10, 3)), "2-D"),
    ],
)
def test_fit_refuses_bad_arrays(xs, ys, message):
    with pytest.raises(ValueError, match=message):
        train.fit(xs, ys)


def test_fit_refuses_batch_larger_than_data():
    with pytest.raises(ValueError, match="batch size"):
        train.fit(
            np.zeros((10, 2)), np.zeros((10, 3)), train_config=train.TrainConfig(batch_size=11)
        )


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(epochs=0), "epochs"),
        (dict(batch_size=-5), "batch_size"),
        (dict(learning_rate=-1e-3), "learning_rate"),
        (dict(schedule="linear"), "schedule"),
        (dict(clip_norm=0.0), "clip_norm"),
    ],
)
def test_bad_train_config_is_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        train.TrainConfig(**bad)


@pytest.mark.parametrize("schedule", train.SCHEDULES)
def test_schedules_and_clipping_train(schedule):
    xs, ys = _toy(200)
    result = train.fit(
        xs,
        ys,
        model_config=model.ModelConfig(in_features=2, out_features=2, hidden=(16,), components=2),
        train_config=train.TrainConfig(epochs=3, batch_size=50, schedule=schedule, clip_norm=5.0),
    )
    losses = [h["loss"] for h in result.history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_mixture_beats_single_gaussian_on_several_generated_images():
    """The reference trunk with 10 components learns several images better than with 1.

    Four 16x16 demo images give 1,024 pairs, each position having four colours; a single
    Gaussian can only blur them, a mixture can hold them apart.
    """
    images = data.demo_images(count=4, size=16)
    xs, ys = data.image_pairs(images)
    results = {}
    for components in (1, 10):
        config = model.ModelConfig(
            components=components,
            input_offset=data.IMAGE_INPUT_OFFSET,
            input_scale=data.IMAGE_INPUT_SCALE,
            scale_floor=0.01,
        )
        result = train.fit(
            xs, ys, model_config=config, train_config=train.TrainConfig(epochs=100, batch_size=128)
        )
        losses = [h["loss"] for h in result.history]
        assert losses[-1] < losses[0] - 1.0, (
            f"K={components}: NLL did not fall: {losses[0]} -> {losses[-1]}"
        )
        results[components] = train.evaluate_nll(result.graphdef, result.params, xs, ys)
    assert results[10] < results[1] - 2.0, results


def test_resuming_fit_from_a_state_leaves_the_callers_arrays_valid():
    xs, ys = _toy(200)
    kwargs = dict(
        model_config=model.ModelConfig(in_features=2, out_features=2, hidden=(8,), components=2)
    )
    first = train.fit(xs, ys, train_config=train.TrainConfig(epochs=1, batch_size=50), **kwargs)
    train.fit(
        xs,
        ys,
        train_config=train.TrainConfig(epochs=2, batch_size=50),
        state=first.state,
        start_epoch=1,
        **{"model_config": first.model_config},
    )
    assert np.all(np.isfinite(np.asarray(first.predict(xs[:3]).means)))  # not deleted by donation


def test_non_finite_steps_are_never_applied_stop_names_epoch_and_step_skip_counts():
    xs, ys = _toy(300)
    config = model.ModelConfig(in_features=2, out_features=2, hidden=(8,), components=2)
    absurd = dict(
        epochs=2, batch_size=50, learning_rate=1e30
    )  # step 1 blows params up, step 2 is inf/NaN
    with pytest.raises(train.NonFiniteError, match=r"epoch 1 at step 2 of 6"):
        train.fit(xs, ys, model_config=config, train_config=train.TrainConfig(**absurd))
    result = train.fit(
        xs, ys, model_config=config, train_config=train.TrainConfig(on_nonfinite="skip", **absurd)
    )
    assert [h.get("skipped_steps") for h in result.history] == [5, 6]
    assert all(np.all(np.isfinite(leaf)) for leaf in _leaves(result.params))
    assert all(np.all(np.isfinite(leaf)) for leaf in _leaves(result.state.opt_state))
    with pytest.raises(ValueError, match="on_nonfinite"):
        train.TrainConfig(on_nonfinite="ignore")
