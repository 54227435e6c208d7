"""Input encodings: widths, values against a float64 reference, no params, the param tree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mdn_jax import encoding, model


def _param_count(module):
    return sum(
        int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(nnx.state(module, nnx.Param))
    )


def test_identity_passes_inputs_through_and_holds_no_params():
    config = model.ModelConfig(in_features=3)
    identity = encoding.for_config(config, rngs=nnx.Rngs(params=0))
    assert isinstance(identity, encoding.Identity) and identity.width == 3
    x = jax.random.normal(jax.random.key(0), (4, 5, 3))
    np.testing.assert_array_equal(jax.jit(lambda v: identity(v))(x), x)
    assert _param_count(identity) == 0


@pytest.mark.parametrize("batch", [(), (7,), (2, 3)])
def test_fourier_matches_float64_reference_under_jit_and_vmap(batch):
    config = model.ModelConfig(in_features=2, fourier_features=5, fourier_scale=3.0, fourier_seed=4)
    fourier = encoding.for_config(config, rngs=nnx.Rngs(params=0))
    assert isinstance(fourier, encoding.Fourier) and fourier.width == 10
    assert _param_count(fourier) == 0
    x = np.random.default_rng(1).uniform(-1, 1, batch + (2,)).astype(np.float32)
    frequencies = np.random.default_rng(4).normal(size=(2, 5)) * 3.0  # the documented B, float64
    angles = 2 * np.pi * x.astype(np.float64) @ frequencies
    expected = np.concatenate([np.sin(angles), np.cos(angles)], axis=-1)
    got = jax.jit(lambda v: fourier(v))(jnp.asarray(x))
    assert got.shape == batch + (10,) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    if batch:
        mapped = jax.jit(jax.vmap(lambda v: fourier(v)))(jnp.asarray(x))
        np.testing.assert_allclose(mapped, expected, rtol=1e-4, atol=1e-4)


def test_fourier_frequencies_have_the_configured_scale():
    config = model.ModelConfig(in_features=2, fourier_features=4096, fourier_scale=7.0)
    frequencies = encoding.fourier_matrix(config)
    assert frequencies.shape == (2, 4096) and frequencies.dtype == np.float32
    assert abs(frequencies.std() / 7.0 - 1) < 0.03 and abs(frequencies.mean()) < 0.3


@pytest.mark.parametrize("fourier_features", [0, 3])
def test_param_tree_names_are_those_checkpoints_hold(fourier_features):
    # Encodings without params must add nothing: checkpoints written before encodings were
    # modules hold exactly these paths.
    config = model.ModelConfig(hidden=(4, 4), components=2, fourier_features=fourier_features)
    _, params = model.init(config, key=jax.random.key(0))
    paths = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)}
    expected = {
        f"[{part}]['{name}'].value"
        for part in ("'head']['linear'", "'trunk'][0", "'trunk'][1")
        for name in ("bias", "kernel")
    }
    assert paths == expected
    assert params["trunk"][0]["kernel"].shape == (2 * fourier_features or 2, 4)
