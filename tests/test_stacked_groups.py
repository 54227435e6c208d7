"""Stacked members trained in groups on CPU (`mdn_jax.stacked_in_turn`, issue 14's speed).

With `GROUP` members per scan, M = 6 makes a group of four and a last group of two: every
member, whatever its group and slot, equals `train.fit` alone (widths, rates, floors, seeds and
dropout rates of the full-width members differing), and
`step.flat_epochs` of two models equals each model's own `flat_epoch`.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from test_stacked import _assert_members_match, _model, _toy

from mdn_jax import model as mdl
from mdn_jax import parallel, stacked, stacked_in_turn, step
from mdn_jax import train as tr

pytestmark = pytest.mark.skipif(
    not stacked.members_in_turn(), reason="the grouped in-turn epoch is the CPU path"
)


def test_six_members_in_two_groups_each_equal_fit_alone():
    assert stacked_in_turn.GROUP == 4  # 6 = a group of four, then one of two
    xs, ys = _toy(160)
    hidden = [(12, 8), (6, 10), (12, 10), (9, 9), (12, 10), (4, 4)]
    floors = [1e-3, 3e-2, 1e-3, 5e-3, 1e-2, 2e-2]
    model_configs = [
        _model(hidden=h, scale_floor=f, dropout=d)
        for h, f, d in zip(hidden, floors, [0.0, 0.0, 0.1, 0.0, 0.2, 0.0])
    ]
    train_configs = [
        tr.TrainConfig(epochs=2, batch_size=40, seed=seed, learning_rate=rate)
        for seed, rate in zip((0, 1, 2, 3, 4, 9), (1e-3, 3e-3, 2e-3, 1e-3, 5e-4, 4e-3))
    ]
    fit = stacked.fit_stacked(xs, ys, model_configs=model_configs, train_configs=train_configs)
    assert len(fit.history[-1]["member_losses"]) == 6
    _assert_members_match(fit, xs, ys, fit.model_configs, train_configs)


def test_flat_epochs_of_two_models_equal_their_own_epochs():
    xs, ys = (jax.numpy.asarray(a) for a in _toy(120))
    config = _model(hidden=(10, 6))
    optimizer = tr.make_optimizer(tr.TrainConfig(), total_steps=6)
    placement = parallel.Placement(None)
    members, alone = [], []
    for seed in (0, 1):
        graphdef, params = mdl.init(config, key=jax.random.key(seed))
        state = step.init_state(params, optimizer, key=jax.random.key(seed + 5))
        batches = step.shuffled_batches(jax.random.key(seed + 7), 120, 40)
        carry = step.padded_flat(placement, state)
        member = (optimizer, step.nll_loss, state, carry, batches, None)
        members.append(member)
        own = (graphdef, optimizer, step.nll_loss, placement, state, carry, xs, ys, batches)
        alone.append(step.flat_epoch(*own))
    together = step.flat_epochs(graphdef, placement, members, xs, ys)
    for got, want in zip(together, alone):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
