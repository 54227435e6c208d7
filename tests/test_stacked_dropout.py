"""Per-member dropout in stacked training (issue 14, item 5): each member's rate is its own, and
each member still equals the same model trained alone with `train.fit`.

Members whose rates differ get their rate as a traced value (`stacked_members.Settings.dropout`);
members that share one keep it static, as `fit` does. Dropout masks are keyed by each member's
own train-state key and step, so a member draws the masks it would draw alone. Tolerance as in
tests/test_stacked.py (1e-5 absolute on params and Adam moments: float32 summation order only).
"""

import json

import pytest
from test_stacked import _assert_members_match, _max_difference, _model, _toy
from test_stacked_cli import SMALL, _main, images  # noqa: F401  (a fixture)

from mdn_jax import stacked
from mdn_jax import stacked_members as sm
from mdn_jax import train as tr


@pytest.mark.parametrize("rates", [(0.0, 0.3), (0.2, 0.2)], ids=["different", "shared"])
def test_members_with_their_own_dropout_rates_equal_fit_alone(rates):
    xs, ys = _toy()
    model_configs = [_model(dropout=rate) for rate in rates]
    train_configs = [tr.TrainConfig(epochs=2, batch_size=64, seed=seed) for seed in (0, 3)]
    wide = sm.wide_config(model_configs)
    assert wide.dropout == max(rates)
    assert sm.shared(model_configs, train_configs, wide).dropout == (rates[0] == rates[1])
    fit = stacked.fit_stacked(xs, ys, model_configs=model_configs, train_configs=train_configs)
    assert [c.dropout for c in fit.model_configs] == list(rates)
    _assert_members_match(fit, xs, ys, fit.model_configs, train_configs)


def test_a_member_with_dropout_trains_differently_from_one_without():
    """The traced rate is used: the same seed with and without dropout gives other params."""
    xs, ys = _toy()
    model_configs = [_model(dropout=0.0), _model(dropout=0.5)]
    train_configs = tr.TrainConfig(epochs=1, batch_size=64, seed=0)
    fit = stacked.fit_stacked(xs, ys, model_configs=model_configs, train_configs=train_configs)
    alone = tr.fit(xs, ys, model_config=model_configs[0], train_config=train_configs)
    assert _max_difference(fit.member(0).params, alone.params) < 1e-5
    assert _max_difference(fit.member(1).params, alone.params) > 1e-4


def test_cli_dropout_list_sets_each_members_rate_and_bad_lists_are_refused(tmp_path, images):  # noqa: F811
    run = tmp_path / "run"
    code, _, err = _main(
        "train", *images, "--out", run, *SMALL, "--epochs", 1, "--dropout", "0,0.25"
    )
    assert code == 0, err
    members = json.loads((run / "config.json").read_text())["members"]
    assert [m["model"]["dropout"] for m in members] == [0.0, 0.25]
    code, _, err = _main(
        "train", *images, "--out", tmp_path / "bad", *SMALL, "--ensemble", 2,
        "--dropout", "0.1,0.2,0.3",
    )  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--dropout has 3 values" in err
    assert not (tmp_path / "bad").exists()
