"""The training step's fast path: the pure forward, the structures' fast heads, the losses.

- `mdn_jax.forward.raw_outputs` gives the values of `model.apply` (every encoding, every
  structure, both scale activations, bfloat16), under jit and vmap.
- Each structure's `fast_head` is the distribution of its `head_to_mixture`.
- The loss the step differentiates (`step.model_loss`: closed form for the built-in losses) has
  the value and gradient, with respect to the raw head outputs and to the params, of autodiff of
  the mixture code (`mx.nll`, `discretised_nll_loss` on `head_to_mixture`), in float64, at
  ordinary and extreme raw outputs, for every structure, loss and scale activation.
- `scale_activation`: 'exp' means `exp(raw) + floor`; configs saved without it load as softplus.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdn_jax import data, forward, model, step, structures, train
from mdn_jax import mixture as mx
from mdn_jax.config import ModelConfig

STRUCTURES = ("joint", "per_dim", "full")
ACTIVATIONS = ("softplus", "exp")
ENCODINGS = {
    "identity": {},
    "fourier": {"fourier_features": 8},
    "hashgrid": {"encoding": "hashgrid", "hashgrid_levels": 2, "hashgrid_log2_table": 6},
}


def x64():
    """A context with JAX's float64 enabled."""
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64

    return enable_x64()


def _config(structure="joint", **fields):
    base = dict(hidden=(16, 8), components=3, out_features=3, structure=structure)
    return ModelConfig(**{**base, **fields})


def _options(config):
    options = model.mixture_options(config)
    del options["structure"]
    return options


def _inputs(n=13, seed=0):
    rng = np.random.default_rng(seed)
    xs = rng.uniform(-1.0, 1.0, (n, 2)).astype(np.float32)
    ys = rng.uniform(0.0, 1.0, (n, 3)).astype(np.float32)
    return xs, ys


@pytest.mark.parametrize(
    "encoding, structure, activation, dtype",
    [
        *itertools.product(ENCODINGS, STRUCTURES, ACTIVATIONS, ["float32"]),
        ("identity", "joint", "softplus", "bfloat16"),
        ("hashgrid", "per_dim", "exp", "bfloat16"),
        ("fourier", "full", "softplus", "bfloat16"),
    ],
)
def test_pure_forward_equals_model_apply(encoding, structure, activation, dtype):
    config = _config(
        structure,
        scale_activation=activation,
        dtype=dtype,
        input_offset=(0.5, -0.25),
        input_scale=(0.5, 2.0),
        **ENCODINGS[encoding],
    )
    graphdef, params = model.init(config, key=jax.random.key(3))
    xs, _ = _inputs()
    expected = jax.jit(lambda p, x: model.apply(graphdef, p, x))(params, xs)
    raw = jax.jit(lambda p, x: forward.raw_outputs(config, p, x))(params, xs)
    got = model.head_to_mixture(raw, structure=structure, **_options(config))
    for a, b in zip(expected, got):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=1e-7)
    # vmap over a leading axis gives the same as the batch.
    mapped = jax.vmap(lambda x: forward.raw_outputs(config, params, x))(xs[:, None, :])
    np.testing.assert_allclose(np.asarray(mapped[:, 0]), np.asarray(raw), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("structure, activation", list(itertools.product(STRUCTURES, ACTIVATIONS)))
def test_fast_head_is_the_mixture_of_head_to_mixture(structure, activation):
    entry = structures.named(structure)
    options = dict(components=3, out_features=3, scale_floor=0.01, mean_activation="none")
    size = entry.head_size(components=3, out_features=3)
    raw = jnp.linspace(-60.0, 60.0, 4 * size).reshape(4, size)
    with x64():
        raw = raw.astype(jnp.float64)
        mixture = entry.head_to_mixture(raw, scale_activation=activation, **options)
        head = entry.fast_head(raw, scale_activation=activation, **options)
        np.testing.assert_array_equal(head.logits, mixture.logits)
        np.testing.assert_array_equal(head.means, mixture.means)
        if structure == "full":
            eye = np.eye(3)
            tril = (
                np.tril(np.asarray(head.lower), -1)
                + np.exp(np.asarray(head.log_diag))[..., None] * eye
            )
            np.testing.assert_allclose(tril, mixture.scale_tril, rtol=1e-12)
        else:
            np.testing.assert_allclose(np.exp(head.log_scales), mixture.scales, rtol=1e-12)
            # Finite log-scales, never below the floor's log, at raw outputs of +-60.
            assert np.all(np.isfinite(head.log_scales))
            assert np.all(np.asarray(head.log_scales) >= math.log(0.01) - 1e-12)


def _raw_cases(size, rng):
    ordinary = rng.normal(0.0, 1.5, (6, size))
    extreme = np.where(rng.random((6, size)) < 0.5, -35.0, 35.0)  # saturated scales and weights
    return {"ordinary": ordinary, "extreme": extreme}


@pytest.mark.parametrize(
    "structure, loss_name, activation",
    list(itertools.product(STRUCTURES, ("nll", "discretised"), ACTIVATIONS)),
)
def test_training_loss_and_gradient_equal_autodiff_in_float64(structure, loss_name, activation):
    """What `model_loss` differentiates (closed form where the step uses it) against autodiff of
    the mixture code, with respect to the raw head outputs, ordinary and extreme."""
    entry = structures.named(structure)
    options = dict(
        components=3,
        out_features=3,
        scale_floor=0.01,
        mean_activation="none",
        scale_activation=activation,
    )
    loss = train.loss_named(loss_name)
    rng = np.random.default_rng(len(structure) + len(loss_name))
    size = entry.head_size(components=3, out_features=3)
    with x64():
        y = jnp.asarray(np.round(rng.uniform(0, 1, (6, 3)) * 255.0) / 255.0)
        for case, raw in _raw_cases(size, rng).items():
            raw = jnp.asarray(raw)
            fast = step._CLOSED_FORM.get(
                loss
            )  # the closed form, whether or not the backend uses it
            got_fn = (
                (lambda r: fast(entry.fast_head(r, **options), y))
                if fast is not None
                else (lambda r: loss(entry.head_to_mixture(r, **options), y))
            )
            want_fn = lambda r: loss(entry.head_to_mixture(r, **options), y)  # noqa: E731
            value, grad = jax.jit(jax.value_and_grad(got_fn))(raw)
            want_value, want_grad = jax.jit(jax.value_and_grad(want_fn))(raw)
            assert np.isfinite(value) and np.all(np.isfinite(grad)), case
            np.testing.assert_allclose(value, want_value, rtol=1e-10, err_msg=case)
            scale = np.max(np.abs(want_grad))
            np.testing.assert_allclose(grad, want_grad, rtol=1e-8, atol=1e-10 * scale, err_msg=case)


@pytest.mark.parametrize(
    "structure, loss_name, closed_form",
    list(itertools.product(STRUCTURES, ("nll", "discretised"), (False, True))),
)
def test_step_loss_equals_the_model_apply_loss(structure, loss_name, closed_form):
    """`model_loss` on the params, with the closed form or autodiff: value and param gradient
    of `loss(model.apply(...), y)`."""
    config = _config(structure, scale_floor=0.01, mean_activation="sigmoid")
    graphdef, params = model.init(config, key=jax.random.key(1))
    xs, ys = _inputs()
    loss = train.loss_named(loss_name)
    got = jax.jit(
        jax.value_and_grad(
            lambda p: step.model_loss(config, loss, p, xs, ys, closed_form=closed_form)
        )
    )(params)
    want = jax.jit(jax.value_and_grad(lambda p: loss(model.apply(graphdef, p, xs), ys)))(params)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(got[1]), jax.tree_util.tree_leaves(want[1])):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-5 * float(np.max(np.abs(b))) + 1e-7)


def test_a_custom_loss_takes_the_mixture_path():
    config = _config()
    graphdef, params = model.init(config, key=jax.random.key(2))
    xs, ys = _inputs()

    def mean_error(mixture, y):
        return jnp.mean(jnp.square(mx.mean(mixture) - y))

    got = step.model_loss(config, mean_error, params, xs, ys)
    np.testing.assert_allclose(got, mean_error(model.apply(graphdef, params, xs), ys), rtol=1e-6)


def test_exp_scales_are_exp_plus_floor_and_old_configs_stay_softplus():
    raw = jnp.asarray([[-30.0, 0.0, 2.0]])
    np.testing.assert_allclose(
        structures.shared.positive(raw, 0.01, "exp"), np.exp(raw) + 0.01, rtol=1e-6
    )
    saved = _config().to_dict()
    del saved["scale_activation"], saved["dropout"]  # a config from before these fields
    assert ModelConfig.from_dict(saved).scale_activation == "softplus"
    assert ModelConfig.from_dict(saved).dropout == 0.0
    with pytest.raises(ValueError, match="scale_activation must be 'softplus' or 'exp'"):
        ModelConfig(scale_activation="relu")


def test_fit_with_exp_scales_learns_and_keeps_the_floor():
    xs, ys = data.image_pairs(data.demo_images(count=1, size=16))
    config = ModelConfig(hidden=(16, 16), components=3, scale_activation="exp", scale_floor=0.02)
    result = train.fit(
        xs, ys, model_config=config, train_config=train.TrainConfig(epochs=3, batch_size=64)
    )
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    mixture = model.apply(result.graphdef, result.state.params, xs)
    assert float(jnp.min(mixture.scales)) >= 0.02


@pytest.mark.parametrize("structure", STRUCTURES)
def test_exp_scales_are_finite_with_finite_gradients_at_any_raw_output(structure):
    config = _config(structure, scale_activation="exp", scale_floor=0.01)
    raw = jnp.where(jnp.arange(model.head_size(config)) % 2 == 0, 1e4, -1e4)[None].repeat(5, 0)
    y = jnp.ones((5, 3))

    def total(r):
        return mx.log_prob(model.head_to_mixture(r, **model.mixture_options(config)), y).sum()

    mixture = model.head_to_mixture(raw, **model.mixture_options(config))
    assert np.isfinite(total(raw)) and np.all(np.isfinite(mx.variance(mixture)))
    assert np.all(np.asarray(structures.of(mixture).floored_scales(mixture)) >= 0.01)
    assert np.all(np.isfinite(jax.jit(jax.grad(total))(raw)))


def test_cli_resume_keeps_the_scale_activation_of_the_run(tmp_path):
    """A run folder from before scale_activation resumes with softplus scales, a new one with
    what it was trained with; a fresh run gets the default."""
    import argparse
    import json

    from mdn_jax import cli_commands

    def chosen(model, resume=True):
        (tmp_path / "config.json").write_text(json.dumps({"model": model}))
        args = argparse.Namespace(resume=resume, out=tmp_path)
        return cli_commands._scale_activation(args) or ModelConfig.scale_activation

    old = _config().to_dict()
    del old["scale_activation"]
    assert chosen(old) == "softplus"
    assert chosen(_config(scale_activation="softplus").to_dict()) == "softplus"
    assert chosen(_config(scale_activation="exp").to_dict()) == "exp"
    assert chosen(old, resume=False) == ModelConfig.scale_activation == "exp"
