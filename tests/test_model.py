"""The network: head layouts, positivity floors, normalisation, purity, config validation."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mdn_jax
from mdn_jax import model

SMALL = dict(hidden=(8, 8), components=3, out_features=2)


@pytest.mark.parametrize("structure", model.STRUCTURES)
@pytest.mark.parametrize("batch", [(), (4,), (2, 3)])
def test_apply_returns_mixture_with_batch_shape(structure, batch):
    config = model.ModelConfig(structure=structure, **SMALL)
    graphdef, params = model.init(config, key=jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), batch + (2,))
    mixture = jax.jit(model.apply, static_argnums=0)(graphdef, params, x)
    assert mdn_jax.structure(mixture) == structure
    assert mdn_jax.batch_shape(mixture) == batch
    assert mdn_jax.num_components(mixture) == 3 and mdn_jax.event_size(mixture) == 2
    y = jnp.zeros(batch + (2,))
    assert jax.jit(mdn_jax.log_prob)(mixture, y).shape == batch
    # The same inputs through vmap give the same mixture.
    if batch:
        mapped = jax.jit(jax.vmap(lambda xi: model.apply(graphdef, params, xi)))(x)
        for a, b in zip(mapped, mixture):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("structure", model.STRUCTURES)
def test_scales_respect_floor_even_for_huge_negative_raw_outputs(structure):
    config = model.ModelConfig(structure=structure, scale_floor=0.01, **SMALL)
    raw = jnp.full((5, model.head_size(config)), -1e4)
    mixture = model.head_to_mixture(raw, **model.head_options(config))
    if structure == "full":
        diag = jnp.diagonal(mixture.scale_tril, axis1=-2, axis2=-1)
        np.testing.assert_allclose(diag, 0.01, rtol=1e-6)
        assert np.all(np.triu(np.asarray(mixture.scale_tril), k=1) == 0)
    else:
        np.testing.assert_allclose(mixture.scales, 0.01, rtol=1e-6)
    grads = jax.jit(
        jax.grad(
            lambda r: mdn_jax.log_prob(
                model.head_to_mixture(r, **model.head_options(config)), jnp.ones((5, 2))
            ).sum()
        )
    )(raw)
    assert np.all(np.isfinite(grads))


def test_sigmoid_means_lie_in_unit_interval():
    config = model.ModelConfig(mean_activation="sigmoid", **SMALL)
    mixture = model.head_to_mixture(
        jnp.linspace(-50, 50, model.head_size(config))[None], **model.head_options(config)
    )
    assert np.all((np.asarray(mixture.means) >= 0) & (np.asarray(mixture.means) <= 1))


def test_input_normalisation_is_applied_inside_the_model():
    config = model.ModelConfig(input_offset=(1.0, -2.0), input_scale=(2.0, 4.0), **SMALL)
    plain = dataclasses.replace(config, input_offset=None, input_scale=None)
    graphdef, params = model.init(config, key=jax.random.key(0))
    plain_graphdef, _ = model.init(plain, key=jax.random.key(0))
    x = jnp.array([[3.0, 6.0]])
    expected = model.apply(
        plain_graphdef, params, (x - jnp.array([1.0, -2.0])) / jnp.array([2.0, 4.0])
    )
    for a, b in zip(model.apply(graphdef, params, x), expected):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert model.config_of(graphdef, params) == config


def test_head_layout_matches_head_size():
    for structure, expected in [
        ("joint", 3 + 2 * 3 * 2),
        ("per_dim", 3 * 2 * 3),
        ("full", 3 + 6 + 3 * 3),
    ]:
        assert model.head_size(model.ModelConfig(structure=structure, **SMALL)) == expected


def test_same_key_same_params_different_key_different_params():
    config = model.ModelConfig(**SMALL)
    _, a = model.init(config, key=jax.random.key(3))
    _, b = model.init(config, key=jax.random.key(3))
    _, c = model.init(config, key=jax.random.key(4))
    leaves = lambda p: jax.tree_util.tree_leaves(p)
    assert all(np.array_equal(x, y) for x, y in zip(leaves(a), leaves(b)))
    assert not all(np.array_equal(x, y) for x, y in zip(leaves(a), leaves(c)))


def test_config_round_trips_through_dict():
    config = model.ModelConfig(
        structure="full", input_offset=(0.5, 0.5), input_scale=(0.5, 0.5), dtype="bfloat16", **SMALL
    )
    assert model.ModelConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(components=0), "components"),
        (dict(hidden=(10, -1)), "hidden"),
        (dict(structure="diag"), "structure"),
        (dict(activation="swishy"), "activation"),
        (dict(scale_floor=0.0), "scale_floor"),
        (dict(scale_floor=float("nan")), "scale_floor"),
        (dict(mean_activation="tanh"), "mean_activation"),
        (dict(input_offset=(1.0,)), "input_offset"),
        (dict(input_scale=(1.0, 0.0)), "input_scale"),
        (
            dict(components=2, out_features=3, mean_init=((0.1, 0.2, 0.3),)),
            "mean_init must be 2 rows",
        ),
        (dict(components=1, out_features=3, mean_init=((0.1, 0.2),)), "mean_init must be 1 rows"),
        (
            dict(components=1, out_features=1, mean_init=((float("inf"),),)),
            "mean_init must be finite",
        ),
        (dict(components=1, out_features=1, mean_init=(("red",),)), "mean_init must be 1 rows"),
        (
            dict(components=1, out_features=1, mean_init=((1.5,),), mean_activation="sigmoid"),
            r"\(0, 1\)",
        ),
        (dict(head_init_scale=0.0), "head_init_scale"),
        (dict(head_init_scale=float("nan")), "head_init_scale"),
        (dict(dtype="float16"), "dtype"),
    ],
)
def test_bad_config_is_refused_with_named_field(bad, message):
    with pytest.raises(ValueError, match=message):
        model.ModelConfig(**bad)


def test_unknown_config_keys_are_refused():
    with pytest.raises(ValueError, match="unknown keys"):
        model.ModelConfig.from_dict({"components": 3, "colour": "red"})


def test_fourier_features_encode_inputs_as_fixed_sines_and_cosines():
    config = model.ModelConfig(fourier_features=4, fourier_scale=2.0, fourier_seed=3, **SMALL)
    frequencies = model.fourier_matrix(config)
    assert frequencies.shape == (2, 4)
    np.testing.assert_array_equal(frequencies, model.fourier_matrix(config))  # fixed by the seed
    x = np.array([[0.1, -0.3]], np.float32)
    angles = 2 * np.pi * x.astype(np.float64) @ frequencies.astype(np.float64)
    np.testing.assert_allclose(
        model.fourier_encode(jnp.asarray(x), frequencies),
        np.concatenate([np.sin(angles), np.cos(angles)], -1),
        rtol=1e-5,
        atol=1e-6,
    )
    graphdef, params = model.init(config, key=jax.random.key(0))
    assert params["trunk"][0]["kernel"].shape == (8, 8)  # 2 * 4 encoded features in
    mixture = model.apply(graphdef, params, jnp.asarray(x))
    assert np.all(np.isfinite(mdn_jax.log_prob(mixture, jnp.zeros((1, 2)))))
    with pytest.raises(ValueError, match="fourier_scale"):
        model.ModelConfig(fourier_features=4, fourier_scale=0.0)


def test_integer_inputs_are_treated_as_floats():
    config = model.ModelConfig(input_offset=(1.0, 1.0), input_scale=(0.3, 0.3), **SMALL)
    graphdef, params = model.init(config, key=jax.random.key(0))
    as_int = model.apply(graphdef, params, jnp.array([[0, 1], [2, 3]]))
    as_float = model.apply(graphdef, params, jnp.array([[0.0, 1.0], [2.0, 3.0]]))
    for a, b in zip(as_int, as_float):
        np.testing.assert_array_equal(a, b)


def test_collapse_diagnostics_on_hand_made_mixtures():
    from mdn_jax import metrics

    # Four components, equal weights everywhere, component 3 never wins (ties go to the first
    # index, so component 0 wins at input 0, component 1 at input 1, component 2 at input 2).
    logits = jnp.array([[1.0, 0.0, 0.0, -50.0], [0.0, 1.0, 0.0, -50.0], [0.0, 0.0, 1.0, -50.0]])
    scales = jnp.full((3, 4, 2), 0.5).at[:, 0, :].set(0.01)  # component 0's scales on the floor
    mixture = mdn_jax.joint(logits, jnp.zeros((3, 4, 2)), scales)
    found = metrics.collapse_diagnostics(mixture, scale_floor=0.01)
    weights = np.asarray(jax.nn.softmax(logits, -1)).mean(0)
    np.testing.assert_allclose(
        found["effective_components"], np.exp(-(weights * np.log(weights)).sum()), rtol=1e-4
    )
    assert found["unused_components"] == 1
    assert found["scales_at_floor"] == 0.25
    # One component taking everything: one effective component, K - 1 unused.
    dominant = mdn_jax.joint(
        jnp.array([[30.0, 0.0, 0.0]]), jnp.zeros((1, 3, 1)), jnp.ones((1, 3, 1))
    )
    found = metrics.collapse_diagnostics(dominant, scale_floor=0.01)
    assert abs(found["effective_components"] - 1.0) < 1e-3 and found["unused_components"] == 2
    assert found["scales_at_floor"] == 0.0


@pytest.mark.parametrize("structure", model.STRUCTURES)
@pytest.mark.parametrize("mean_activation", model.MEAN_ACTIVATIONS)
def test_mean_init_sets_every_component_mean_and_small_head_starts_near_it(
    structure, mean_activation
):
    means = ((0.1, 0.9), (0.5, 0.2), (0.8, 0.7))
    config = model.ModelConfig(
        structure=structure,
        mean_activation=mean_activation,
        mean_init=means,
        head_init_scale=1e-3,
        **SMALL,
    )
    assert model.ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    graphdef, params = model.init(config, key=jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (16, 2))
    mixture = model.apply(graphdef, params, x)
    # With the head's weights scaled by 1e-3 the means sit within ~1e-3 of mean_init at any input.
    np.testing.assert_allclose(
        mdn_jax.component_means(mixture), np.broadcast_to(means, (16, 3, 2)), atol=5e-3
    )
    logits = mixture.logits.reshape(-1, 3)
    assert np.ptp(np.asarray(logits), axis=-1).max() < 1e-2  # near-uniform weights
    # Same key without the options: the trunk is identical, the head kernel 1000x larger.
    plain_graphdef, plain = model.init(
        dataclasses.replace(config, mean_init=None, head_init_scale=1.0), key=jax.random.key(0)
    )
    np.testing.assert_allclose(
        params["head"]["linear"]["kernel"][...] * 1e3,
        plain["head"]["linear"]["kernel"][...],
        rtol=1e-6,
    )
    for a, b in zip(
        jax.tree_util.tree_leaves(params["trunk"]), jax.tree_util.tree_leaves(plain["trunk"])
    ):
        np.testing.assert_array_equal(a, b)


def test_spread_means_are_data_points_spread_to_the_corners():
    rng = np.random.default_rng(0)
    corners = np.array([[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 0, 1]], np.float64)
    ys = np.concatenate([np.full((1000, 3), 0.5), corners[rng.integers(0, 4, 200)]])
    spread = np.array(model.spread_means(ys, 5))
    assert spread.shape == (5, 3)
    np.testing.assert_array_equal(spread[0], [0.5, 0.5, 0.5])  # nearest the data mean first
    assert {tuple(row) for row in spread[1:]} == {
        tuple(c) for c in corners
    }  # then the farthest points
    assert model.spread_means(ys, 5) == model.spread_means(ys, 5)  # deterministic
    assert (
        len(set(model.spread_means(np.zeros((3, 2)), 4))) == 1
    )  # fewer distinct points than K: repeats
    with pytest.raises(ValueError, match="finite"):
        model.spread_means(np.array([[np.nan, 0.0]]), 2)
