"""The held-out pixel split: seeded, disjoint, complete, the asked share."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdn_jax import holdout


@settings(max_examples=15, deadline=None)
@given(
    count=st.integers(1, 5000),
    fraction=st.floats(0.0, 0.9),
    seed=st.integers(0, 2**31),
)
def test_split_is_a_seeded_partition_of_the_asked_share(count, fraction, seed):
    expected = max(round(fraction * count), 1) if fraction > 0 else 0
    if expected >= count:  # nothing would be left to train on
        with pytest.raises(ValueError, match="leaves none to train on"):
            holdout.split(count, fraction=fraction, seed=seed)
        return
    train, held = holdout.split(count, fraction=fraction, seed=seed)
    assert train.dtype == held.dtype == np.int64
    np.testing.assert_array_equal(np.sort(np.concatenate([train, held])), np.arange(count))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(held) > 0)
    assert len(held) == expected
    again_train, again_held = holdout.split(count, fraction=fraction, seed=seed)
    np.testing.assert_array_equal(held, again_held)
    np.testing.assert_array_equal(train, again_train)


def test_split_depends_on_the_seed_and_spreads_over_the_pixels():
    _, a = holdout.split(10_000, fraction=0.1, seed=0)
    _, b = holdout.split(10_000, fraction=0.1, seed=1)
    assert len(a) == len(b) == 1000 and not np.array_equal(a, b)
    # a random share, not a block: each tenth of the rows holds about a tenth of the held-out
    counts = np.bincount(a // 1000, minlength=10)
    assert counts.min() > 50 and counts.max() < 150


@pytest.mark.parametrize(
    "count, fraction, message",
    [
        (10, 1.0, "must be in \\[0, 1\\)"),
        (10, -0.1, "must be in \\[0, 1\\)"),
        (10, "lots", "must be a number"),
        (0, 0.1, "positive pixel count"),
        (1, 0.5, "leaves none to train on"),
    ],
)
def test_bad_splits_are_refused_in_one_line(count, fraction, message):
    with pytest.raises(ValueError, match=message):
        holdout.split(count, fraction=fraction)
