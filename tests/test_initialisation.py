"""Starting values from data: input normalisation (spread_means is tested in test_model)."""

import numpy as np

from mdn_jax import initialisation, model


def test_normalisation_is_float64_mean_and_std_with_constant_features_unscaled():
    rng = np.random.default_rng(0)
    xs = np.stack([rng.normal(3.0, 2.0, 500), np.full(500, 5.0), rng.uniform(0, 1, 500)], 1)
    offset, scale = initialisation.normalisation_from_data(xs.astype(np.float32))
    reference = xs.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(offset, reference.mean(0), rtol=1e-12)
    np.testing.assert_allclose(
        scale, [reference[:, 0].std(), 1.0, reference[:, 2].std()], rtol=1e-12
    )
    assert all(type(v) is float for v in offset + scale)  # plain floats: JSON in a ModelConfig
    config = model.ModelConfig(in_features=3, input_offset=offset, input_scale=scale)
    assert config.input_scale[1] == 1.0


def test_helpers_are_the_ones_model_re_exports():
    assert model.spread_means is initialisation.spread_means
    assert model.normalisation_from_data is initialisation.normalisation_from_data
