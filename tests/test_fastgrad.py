"""Tests of mdn_jax.fastgrad: closed-form gradients against autodiff of the plain formula.

The reference for every structure is the textbook log-space NLL written out below with
`log_softmax`, `logsumexp`, `exp` of the log-scales and (for full) a dense triangular solve, and
differentiated by JAX's autodiff; all comparisons are in float64, under jit and under vmap, at
ordinary inputs and at the extremes (logits +-1e4, scales 1e-6 and 1e6, targets 1e4 away from
every mean).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mdn_jax as mdn
from mdn_jax import fastgrad

STRUCTURES = ("joint", "per_dim", "full")
BATCH_SHAPES = [(), (7,), (3, 4)]
HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)
HEADS = {"joint": fastgrad.JointHead, "per_dim": fastgrad.PerDimHead, "full": fastgrad.FullHead}


def x64():
    """A context with JAX's float64 enabled (`jax.enable_x64` in new JAX, `jax.experimental`
    before)."""
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64

    return enable_x64()


# ---------------------------------------------------------------------------------------------
# Inputs and the plain reference formula.


def make_inputs(structure, batch, K, D, rng, *, extreme=()):
    """Random head outputs and targets, float64 numpy; `extreme` names the extremes to apply."""
    batch = tuple(batch)
    if structure == "per_dim":
        shapes = [batch + (D, K)] * 3
    else:
        shapes = [batch + (K,), batch + (K, D), batch + (K, D)]
    logits = rng.normal(0.0, 1.5, shapes[0])
    means = rng.normal(0.0, 2.0, shapes[1])
    log_scales = rng.uniform(-1.0, 0.7, shapes[2])
    y = rng.normal(0.0, 2.0, batch + (D,))
    if "logits" in extreme:
        logits = np.where(rng.random(logits.shape) < 0.5, -1e4, 1e4)
    if "scales" in extreme:
        log_scales = np.where(rng.random(log_scales.shape) < 0.5, math.log(1e-6), math.log(1e6))
    if "targets" in extreme:  # 1e4 beyond the largest mean in every dimension
        axis = -1 if structure == "per_dim" else -2
        y = np.max(means, axis=(*range(means.ndim - 2), axis)) + 1e4 + 0.0 * y
    if structure != "full":
        return (logits, means, log_scales), y
    lower = rng.normal(0.0, 0.3, batch + (K, D, D))
    lower = lower + np.triu(rng.normal(0.0, 5.0, lower.shape))  # junk that must be ignored
    return (logits, means, log_scales, lower), y


def reference_nll(structure, *arguments):
    """The plain formula: -mean(logsumexp(log_softmax(logits) + log N_k(y)))."""
    *params, y = arguments
    logits, means = params[0], params[1]
    log_w = jax.nn.log_softmax(logits, axis=-1)
    if structure == "per_dim":
        scales = jnp.exp(params[2])
        lp = -0.5 * jnp.square((y[..., :, None] - means) / scales) - jnp.log(scales)
        lp = lp - HALF_LOG_TWO_PI
        return -jnp.mean(jnp.sum(jax.nn.logsumexp(log_w + lp, axis=-1), axis=-1))
    if structure == "joint":
        scales = jnp.exp(params[2])
        lp = -0.5 * jnp.square((y[..., None, :] - means) / scales) - jnp.log(scales)
        lp = jnp.sum(lp - HALF_LOG_TWO_PI, axis=-1)
        return -jnp.mean(jax.nn.logsumexp(log_w + lp, axis=-1))
    log_diag, lower = params[2], params[3]
    d = means.shape[-1]
    tril = jnp.tril(lower, -1) + jnp.exp(log_diag)[..., None] * jnp.eye(d)
    diff = y[..., None, :] - means
    white = jax.scipy.linalg.solve_triangular(tril, diff[..., None], lower=True)[..., 0]
    log_det = jnp.sum(jnp.log(jnp.diagonal(tril, axis1=-2, axis2=-1)), axis=-1)
    lp = -0.5 * jnp.sum(jnp.square(white), axis=-1) - log_det - d * HALF_LOG_TWO_PI
    return -jnp.mean(jax.nn.logsumexp(log_w + lp, axis=-1))


def fast_nll(structure, *arguments):
    *params, y = arguments
    return fastgrad.nll(HEADS[structure](*params), y)


def value_and_grads(loss, structure, params, y):
    """(value, gradient with respect to every head output and y), jitted."""
    function = _compiled_value_and_grads(loss, structure, len(params) + 1)
    return function(*map(jnp.asarray, params), jnp.asarray(y))


@functools.cache
def _compiled_value_and_grads(loss, structure, arity):
    """One jitted function per (loss, structure), so that repeated shapes reuse compilation."""
    argnums = tuple(range(arity))
    return jax.jit(jax.value_and_grad(functools.partial(loss, structure), argnums=argnums))


def assert_close(actual, expected, *, rtol=1e-9, atol_fraction=None):
    """Equal to rtol, or to atol_fraction (default rtol) of each array's largest magnitude:
    gradients span 1e-20..1e20 within one array."""
    value, grads = actual
    ref_value, ref_grads = expected
    np.testing.assert_allclose(value, ref_value, rtol=rtol)
    for got, want in zip(grads, ref_grads, strict=True):
        got, want = np.asarray(got), np.asarray(want)
        assert np.all(np.isfinite(got)), got
        scale = max(np.max(np.abs(want), initial=0.0), 1e-300)
        atol = (rtol if atol_fraction is None else atol_fraction) * scale
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------
# Value and every gradient against autodiff.


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("batch", BATCH_SHAPES)
def test_value_and_gradients_equal_autodiff(structure, batch):
    rng = np.random.default_rng(hash((structure, batch)) % 2**32)
    with x64():
        for K, D in [(1, 1), (3, 2), (5, 3)]:
            params, y = make_inputs(structure, batch, K, D, rng)
            expected = value_and_grads(reference_nll, structure, params, y)
            assert_close(value_and_grads(fast_nll, structure, params, y), expected)


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize(
    "extreme",
    [("logits",), ("scales",), ("targets",), ("logits", "scales", "targets")],
    ids=lambda e: "+".join(e),
)
def test_extreme_inputs_equal_autodiff_and_stay_finite(structure, extreme):
    rng = np.random.default_rng(len(structure) * 100 + len(extreme))
    with x64():
        for batch in [(6,), (2, 3)]:
            params, y = make_inputs(structure, batch, 4, 3, rng, extreme=extreme)
            expected = value_and_grads(reference_nll, structure, params, y)
            assert np.isfinite(expected[0])
            assert_close(value_and_grads(fast_nll, structure, params, y), expected)


def test_full_above_the_unrolled_size_uses_the_dense_solve_and_still_matches():
    rng = np.random.default_rng(11)
    with x64():
        params, y = make_inputs("full", (5,), 3, 10, rng)
        expected = value_and_grads(reference_nll, "full", params, y)
        assert_close(value_and_grads(fast_nll, "full", params, y), expected)


@pytest.mark.parametrize("structure", STRUCTURES)
def test_float32_extremes_are_finite(structure):
    """Single precision at the extremes: the value and every gradient stay finite."""
    rng = np.random.default_rng(5)
    params, y = make_inputs(structure, (8,), 4, 3, rng, extreme=("logits", "scales", "targets"))
    if structure == "full":
        # With diagonals of 1e-6, an O(1) strict lower part makes L^-1 grow like 1e6^D, so
        # (L^-1 (y - mu))^2 overflows float32 in the value itself, whatever the gradient does.
        params = params[:3] + (np.zeros_like(params[3]),)
    params = tuple(np.asarray(p, np.float32) for p in params)
    value, grads = value_and_grads(fast_nll, structure, params, np.asarray(y, np.float32))
    assert np.isfinite(value)
    for grad in grads:
        assert grad.dtype == np.float32
        assert np.all(np.isfinite(np.asarray(grad)))


@pytest.mark.parametrize("structure", STRUCTURES)
def test_under_vmap_each_slice_matches_its_own_autodiff(structure):
    rng = np.random.default_rng(17)
    with x64():
        params, y = make_inputs(structure, (4, 6), 3, 3, rng)
        argnums = tuple(range(len(params) + 1))
        grad_fast = jax.value_and_grad(lambda *a: fast_nll(structure, *a), argnums=argnums)
        value, grads = jax.jit(jax.vmap(grad_fast))(*map(jnp.asarray, params), jnp.asarray(y))
        for i in range(4):
            sliced = tuple(p[i] for p in params)
            ref_value, ref_grads = value_and_grads(reference_nll, structure, sliced, y[i])
            assert_close((value[i], [g[i] for g in grads]), (ref_value, ref_grads))


@pytest.mark.parametrize("structure", STRUCTURES)
def test_eager_matches_jit(structure):
    rng = np.random.default_rng(23)
    with x64():
        params, y = make_inputs(structure, (5,), 3, 2, rng)
        argnums = tuple(range(len(params) + 1))
        eager = jax.value_and_grad(lambda *a: fast_nll(structure, *a), argnums=argnums)(
            *map(jnp.asarray, params), jnp.asarray(y)
        )
        assert_close(eager, value_and_grads(fast_nll, structure, params, y), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Agreement with the library's mixture NLL, and errors.


@pytest.mark.parametrize("structure", STRUCTURES)
def test_value_equals_mdn_jax_nll(structure):
    rng = np.random.default_rng(31)
    params, y = make_inputs(structure, (9,), 4, 3, rng)
    params = tuple(np.asarray(p, np.float32) for p in params)
    if structure == "full":
        d = params[1].shape[-1]
        tril = np.tril(params[3], -1) + np.exp(params[2])[..., None] * np.eye(d, dtype=np.float32)
        mixture = mdn.full(params[0], params[1], tril)
    else:
        build = mdn.joint if structure == "joint" else mdn.per_dim
        mixture = build(params[0], params[1], np.exp(params[2]))
    expected = mdn.nll(mixture, y.astype(np.float32))
    got = fastgrad.nll(HEADS[structure](*params), y.astype(np.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_nll_rejects_a_mixture_that_is_not_a_head():
    mixture = mdn.joint(np.zeros(2), np.zeros((2, 1)), np.ones((2, 1)))
    with pytest.raises(TypeError, match="JointHead"):
        fastgrad.nll(mixture, np.zeros(1))


def test_nll_rejects_mismatched_batch_axes():
    head = fastgrad.JointHead(np.zeros((4, 2)), np.zeros((4, 2, 3)), np.zeros((4, 2, 3)))
    with pytest.raises(ValueError, match="batch axes"):
        fastgrad.nll(head, np.zeros((5, 3)))


# ---------------------------------------------------------------------------------------------
# The discretised (8-bit bin) loss: closed-form combination over autodiffed bin masses.


def make_discretised_inputs(structure, batch, K, D, rng, *, extreme=()):
    """Head outputs and 8-bit targets in [0, 1] (edge bins included), float64 numpy."""
    params, _ = make_inputs(structure, batch, K, D, rng, extreme=extreme)
    y = rng.integers(0, 256, batch + (D,)) / 255.0
    y.reshape(-1)[:2] = (0.0, 1.0)[: y.size]  # the open edge bins
    params = list(params)
    params[1] = 0.5 + 0.3 * rng.normal(size=params[1].shape)
    if "scales" not in extreme:  # from far below a bin's width to far above it
        params[2] = rng.uniform(-8.0, 0.5, params[2].shape)
    if "targets" in extreme:  # every mean 1e4 away from every target
        params[1] = np.where(rng.random(params[1].shape) < 0.5, -1e4, 1e4)
    return tuple(params), y


def reference_discretised(structure, *arguments):
    """Autodiff of mdn_jax's discretised log-probability on the same distribution."""
    *params, y = arguments
    if structure == "full":
        d = params[1].shape[-1]
        tril = jnp.tril(params[3], -1) + jnp.exp(params[2])[..., None] * jnp.eye(d)
        mixture = mdn.FullMixture(params[0], params[1], tril)
    else:
        build = mdn.JointMixture if structure == "joint" else mdn.PerDimMixture
        mixture = build(params[0], params[1], jnp.exp(params[2]))
    return -jnp.mean(mdn.discretised_log_prob(mixture, y))


def fast_discretised(structure, *arguments):
    *params, y = arguments
    return fastgrad.discretised_nll(HEADS[structure](*params), y)


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("batch", BATCH_SHAPES)
def test_discretised_value_and_gradients_equal_autodiff(structure, batch):
    rng = np.random.default_rng(hash(("discretised", structure, batch)) % 2**32)
    with x64():
        for K, D in [(1, 1), (4, 3)]:
            params, y = make_discretised_inputs(structure, batch, K, D, rng)
            expected = value_and_grads(reference_discretised, structure, params, y)
            got = value_and_grads(fast_discretised, structure, params, y)
            assert_close(got, expected)


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize(
    "extreme",
    [("logits",), ("scales",), ("targets",), ("logits", "scales", "targets")],
    ids=lambda e: "+".join(e),
)
def test_discretised_extremes_equal_autodiff_and_stay_finite(structure, extreme):
    """At scales of 1e6 a bin is 4e-9 standard deviations wide, and the bin mass's own
    derivative (autodiff in both programs) is mid / sigma ~ 1e-13 left over from two 1 / width
    ~ 1e8 terms of the bin's edges that cancel: ~1e15 amplification of rounding, which differs
    between two compilations (fusion, FMA). Those entries are compared to 1e-6 of the array's
    largest gradient; everything else to 1e-9."""
    rng = np.random.default_rng(7 * len(structure) + len(extreme))
    with x64():
        params, y = make_discretised_inputs(structure, (2, 3), 4, 3, rng, extreme=extreme)
        expected = value_and_grads(reference_discretised, structure, params, y)
        assert np.isfinite(expected[0])
        got = value_and_grads(fast_discretised, structure, params, y)
        assert_close(got, expected, atol_fraction=1e-6 if "scales" in extreme else None)


@pytest.mark.parametrize("structure", STRUCTURES)
def test_discretised_under_vmap_matches_autodiff(structure):
    rng = np.random.default_rng(41)
    with x64():
        params, y = make_discretised_inputs(structure, (3, 5), 3, 3, rng)
        argnums = tuple(range(len(params) + 1))
        grad_fast = jax.value_and_grad(lambda *a: fast_discretised(structure, *a), argnums=argnums)
        value, grads = jax.jit(jax.vmap(grad_fast))(*map(jnp.asarray, params), jnp.asarray(y))
        for i in range(3):
            sliced = tuple(p[i] for p in params)
            expected = value_and_grads(reference_discretised, structure, sliced, y[i])
            assert_close((value[i], [g[i] for g in grads]), expected)


@pytest.mark.parametrize("structure", STRUCTURES)
def test_discretised_float32_extremes_are_finite(structure):
    rng = np.random.default_rng(13)
    extreme = ("logits", "scales", "targets")
    params, y = make_discretised_inputs(structure, (8,), 4, 3, rng, extreme=extreme)
    if structure == "full":  # as in test_float32_extremes_are_finite: the value itself overflows
        params = params[:3] + (np.zeros_like(params[3]),)
    params = tuple(np.asarray(p, np.float32) for p in params)
    value, grads = value_and_grads(fast_discretised, structure, params, np.asarray(y, np.float32))
    assert np.isfinite(value)
    for grad in grads:
        assert np.all(np.isfinite(np.asarray(grad)))
