"""Checkpoints: exact round trip, resume equals an uninterrupted run, retention, atomicity,
errors."""

import logging

import jax
import numpy as np
import pytest

pytest.importorskip("orbax.checkpoint")

from mdn_jax import checkpoint, model, train  # noqa: E402

MODEL = model.ModelConfig(in_features=2, out_features=2, hidden=(8,), components=2)
# A chain (clipping + Adam) and a schedule that depends on total_steps, so the rebuilt optimiser
# matters.
TRAIN = train.TrainConfig(epochs=4, batch_size=50, schedule="warmup_cosine", clip_norm=1.0, seed=3)


def _toy(n=200, seed=0):
    rng = np.random.default_rng(seed)
    xs = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    ys = np.concatenate([np.sin(3 * xs[:, :1]), np.cos(2 * xs[:, 1:])], axis=1)
    return xs, (ys + 0.1 * rng.normal(size=ys.shape)).astype(np.float32)


def _host(state):
    """Host copies of every leaf (the next epoch donates the device buffers), key as its data."""
    arrays = (state.params, state.opt_state, state.step, jax.random.key_data(state.key))
    return [np.array(leaf, copy=True) for leaf in jax.tree_util.tree_leaves(arrays)]


def _assert_bitwise_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """`fit` for 4 epochs, checkpointing every epoch and 'killed' (callback returns True)
    after 2."""
    directory = tmp_path_factory.mktemp("ckpt")
    xs, ys = _toy()
    history, saved = [], {}

    def save_and_maybe_stop(report):
        history.append(
            {
                "epoch": report.epoch,
                "loss": report.loss,
                "seconds": report.seconds,
                "samples_per_second": report.samples_per_second,
            }
        )
        checkpoint.save(
            directory,
            state=report.state,
            model_config=report.model_config,
            train_config=TRAIN,
            epoch=report.epoch,
            num_samples=xs.shape[0],
            history=history,
        )
        saved[report.epoch] = (_host(report.state), list(history))
        return report.epoch == 2

    result = train.fit(
        xs, ys, model_config=MODEL, train_config=TRAIN, callbacks=[save_and_maybe_stop]
    )
    return directory, result, saved


def test_round_trip_is_bit_exact(interrupted):
    directory, result, saved = interrupted
    assert checkpoint.latest_epoch(directory) == 2
    for epoch in (1, 2):
        restored = checkpoint.restore(directory, epoch=epoch)
        leaves, history = saved[epoch]
        _assert_bitwise_equal(_host(restored.state), leaves)
        assert restored.state.step.dtype == np.int32 and int(restored.state.step) == 4 * epoch
        assert jax.dtypes.issubdtype(restored.state.key.dtype, jax.dtypes.prng_key)
        assert jax.tree_util.tree_structure(restored.state) == jax.tree_util.tree_structure(
            result.state
        )
        assert (
            restored.model_config == result.model_config
        )  # includes the fitted input normalisation
        assert restored.train_config == TRAIN
        assert (restored.epoch, restored.history, restored.num_samples) == (epoch, history, 200)
    assert checkpoint.restore(directory).epoch == 2  # default: the latest


def test_resume_equals_uninterrupted_training(interrupted):
    directory, _, _ = interrupted
    xs, ys = _toy()
    straight = train.fit(xs, ys, model_config=MODEL, train_config=TRAIN)
    restored = checkpoint.restore(directory)
    resumed = train.fit(
        xs,
        ys,
        model_config=restored.model_config,
        train_config=restored.train_config,
        state=restored.state,
        start_epoch=restored.epoch,
    )
    assert [h["epoch"] for h in resumed.history] == [3, 4]
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history[2:]]
    _assert_bitwise_equal(_host(resumed.state), _host(straight.state))


def test_restore_builds_no_trainer(interrupted, monkeypatch):
    """The target structure comes from jax.eval_shape of the inits, not from a Trainer."""
    directory, _, saved = interrupted

    def refuse(*args, **kwargs):
        raise AssertionError("restore built a Trainer")

    monkeypatch.setattr(train.Trainer, "__init__", refuse)
    restored = checkpoint.restore(directory, epoch=2)
    _assert_bitwise_equal(_host(restored.state), saved[2][0])


def _save(directory, state, epoch, **kwargs):
    kwargs = {"model_config": MODEL, "train_config": TRAIN, "num_samples": 200, **kwargs}
    return checkpoint.save(directory, state=state, epoch=epoch, **kwargs)


def test_keeps_the_newest_checkpoints_and_refuses_older_epochs(interrupted, tmp_path):
    state = checkpoint.restore(interrupted[0]).state
    for epoch in (3, 4, 5):
        assert _save(tmp_path, state, epoch) == tmp_path / str(epoch)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["4", "5"]
    assert checkpoint.latest_epoch(tmp_path) == 5
    with pytest.raises(checkpoint.CheckpointError, match="epoch 4 is not newer"):
        _save(tmp_path, state, 4)


def test_leftover_temporary_directory_is_not_a_checkpoint(interrupted, tmp_path):
    state = checkpoint.restore(interrupted[0]).state
    _save(tmp_path, state, 1)
    # What a crash mid-save leaves behind: Orbax writes into '<epoch>.orbax-checkpoint-tmp' and only
    # renames it to '<epoch>' once complete.
    leftover = tmp_path / "2.orbax-checkpoint-tmp"
    (leftover / "state").mkdir(parents=True)
    (leftover / "state" / "partial").write_bytes(b"\0" * 10)
    assert checkpoint.latest_epoch(tmp_path) == 1
    assert checkpoint.restore(tmp_path).epoch == 1
    _save(tmp_path, state, 2)  # a later save of that epoch replaces the leftover
    assert checkpoint.latest_epoch(tmp_path) == 2 and not leftover.exists()
    _assert_bitwise_equal(_host(checkpoint.restore(tmp_path).state), _host(state))


def test_remove_unfinished_deletes_only_temporary_directories(interrupted, tmp_path):
    state = checkpoint.restore(interrupted[0]).state
    _save(tmp_path, state, 1)
    for name in (
        "2.orbax-checkpoint-tmp",
        "7.orbax-checkpoint-tmp",
    ):  # two saves that never finished
        (tmp_path / name / "state").mkdir(parents=True)
    assert [p.name for p in checkpoint.remove_unfinished(tmp_path)] == [
        "2.orbax-checkpoint-tmp",
        "7.orbax-checkpoint-tmp",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]
    assert checkpoint.restore(tmp_path).epoch == 1
    assert checkpoint.remove_unfinished(tmp_path / "absent") == []


def test_missing_checkpoints_raise_helpful_errors(tmp_path):
    assert checkpoint.latest_epoch(tmp_path) is None
    assert checkpoint.latest_epoch(tmp_path / "absent") is None
    for directory in (tmp_path, tmp_path / "absent"):
        with pytest.raises(
            checkpoint.CheckpointError, match="no checkpoint in .*; train first or check the path"
        ):
            checkpoint.restore(directory)
    assert not (tmp_path / "absent").exists()


def test_missing_epoch_and_config_mismatch_raise(interrupted, tmp_path):
    state = checkpoint.restore(interrupted[0]).state
    with pytest.raises(
        checkpoint.CheckpointError, match=r"no checkpoint for epoch 7 .*available: \[1, 2\]"
    ):
        checkpoint.restore(interrupted[0], epoch=7)
    wider = model.ModelConfig(in_features=2, out_features=2, hidden=(16,), components=2)
    _save(tmp_path, state, 1, model_config=wider)  # arrays of an (8,) model labelled (16,)
    with pytest.raises(
        checkpoint.CheckpointError,
        match=r"does not match its stored config \(hidden=\(16,\).*on disk",
    ) as error:
        checkpoint.restore(tmp_path)
    assert "\n" not in str(error.value)


def test_save_and_restore_log_nothing_at_info(interrupted, tmp_path, caplog):
    state = checkpoint.restore(interrupted[0]).state
    with caplog.at_level(logging.INFO):
        _save(tmp_path, state, 1)
        checkpoint.restore(tmp_path)
        checkpoint.latest_epoch(tmp_path)
    assert [r.getMessage() for r in caplog.records if r.name == "absl"] == []
