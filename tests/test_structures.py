"""Tests of the structure table (mdn_jax.structures): complete entries, dispatch by type and by
name, the raw-head layout, marginals against float64 numpy, and the rule that no code outside
the structure modules and the config module compares a structure's name to a string."""

from __future__ import annotations

import ast
import dataclasses
import pathlib
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

import mdn_jax as mdn
from mdn_jax import structures

NAMES = ("joint", "per_dim", "full")
PACKAGE = pathlib.Path(mdn.__file__).parent
# Where comparing a structure's name to a string is allowed: the structure modules themselves
# and config validation.
ALLOWED = ("structures", "config.py")


def make_params(structure, batch, K, D, rng):
    """Random float32 parameters for `structure` (numpy), as the constructor takes them."""
    if structure == "per_dim":
        weights = locations = batch + (D, K)
    else:
        weights, locations = batch + (K,), batch + (K, D)
    logits = rng.normal(0.0, 1.5, weights)
    means = rng.normal(0.0, 2.0, locations)
    if structure == "full":
        third = np.tril(rng.normal(0.0, 0.5, locations + (D,)), k=-1)
        third = third + np.eye(D) * rng.uniform(0.3, 2.0, locations)[..., None, :]
        third = third + np.triu(rng.normal(0.0, 5.0, locations + (D,)), k=1)  # ignored upper part
    else:
        third = rng.uniform(0.3, 2.0, locations)
    return tuple(a.astype(np.float32) for a in (logits, means, third))


# ---------------------------------------------------------------------------------------------
# The table.


def test_every_entry_of_every_structure_is_filled():
    assert tuple(entry.name for entry in structures.TABLE) == NAMES == structures.NAMES
    for entry in structures.TABLE:
        for field in dataclasses.fields(structures.Structure):
            value = getattr(entry, field.name)
            assert value is not None, (entry.name, field.name)
            if field.name == "name":
                assert isinstance(value, str)
            elif field.name == "mixture_type":
                assert issubclass(value, tuple) and hasattr(value, "_fields")  # a NamedTuple
            else:
                assert callable(value), (entry.name, field.name)
    assert len({entry.mixture_type for entry in structures.TABLE}) == len(structures.TABLE)


@pytest.mark.parametrize("name", NAMES)
def test_dispatch_by_type_and_by_name_agree(name):
    entry = structures.named(name)
    mixture = entry.create(*make_params(name, (2,), 3, 2, np.random.default_rng(0)))
    assert type(mixture) is entry.mixture_type
    assert structures.of(mixture) is entry
    assert mdn.structure(mixture) == name
    # The public constructor and NamedTuple are the table's.
    assert getattr(mdn, name) is entry.create
    assert entry.mixture_type in typing.get_args(mdn.Mixture)
    # Under jit the mixture is rebuilt as the same NamedTuple type, so dispatch still works.
    assert jax.jit(lambda m: mdn.mean(m))(mixture).shape == (2, 2)

    class Subclass(entry.mixture_type):
        pass

    assert structures.of(Subclass(*mixture)) is entry


def test_unknown_types_and_names_are_refused_in_one_line():
    with pytest.raises(TypeError, match="expected a mixture from mdn_jax.joint/per_dim/full"):
        mdn.structure((1, 2, 3))
    with pytest.raises(ValueError, match="structure must be one of joint, per_dim, full"):
        structures.named("diagonal")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mean_activation", ["none", "sigmoid"])
def test_mean_bias_indices_point_at_the_component_means(name, mean_activation):
    entry, k, d = structures.named(name), 4, 3
    size = entry.head_size(components=k, out_features=d)
    indices = np.asarray(entry.mean_bias_indices(components=k, out_features=d))
    assert indices.shape == (k, d)
    assert len(np.unique(indices)) == k * d and indices.min() >= 0 and indices.max() < size
    wanted = np.random.default_rng(1).uniform(0.1, 0.9, (k, d))
    raw_means = np.log(wanted) - np.log1p(-wanted) if mean_activation == "sigmoid" else wanted
    raw = np.zeros((5, size), np.float32)
    raw[:, indices] = raw_means
    mixture = entry.head_to_mixture(
        jnp.asarray(raw),
        components=k,
        out_features=d,
        scale_floor=1e-3,
        mean_activation=mean_activation,
    )
    assert structures.of(mixture) is entry
    assert mdn.batch_shape(mixture) == (5,) and mdn.event_size(mixture) == d
    assert mdn.num_components(mixture) == k
    np.testing.assert_allclose(
        mdn.component_means(mixture), np.broadcast_to(wanted, (5, k, d)), rtol=1e-5
    )


@pytest.mark.parametrize("name", NAMES)
def test_collapse_diagnostics_count_only_the_floored_scales(name):
    """Half the standard deviations (full: half the Cholesky diagonals; its off-diagonal zeros
    are not scales) sit on the floor; component 0 wins everywhere."""
    from mdn_jax import metrics

    k, d, floor = 4, 2, 0.01
    params = list(make_params(name, (3,), k, d, np.random.default_rng(5)))
    params[0] = np.where(np.arange(k) == 0, 40.0, 0.0).astype(np.float32) * np.ones_like(params[0])
    if name == "full":
        diagonal = np.where(np.arange(d) == 0, floor, 0.7) * np.ones((3, k, d))
        params[2] = (np.eye(d) * diagonal[..., None, :]).astype(np.float32)
    else:
        params[2] = np.where(np.arange(params[2].shape[-1]) % 2 == 0, floor, 0.7) * np.ones_like(
            params[2]
        )
    found = metrics.collapse_diagnostics(getattr(mdn, name)(*params), scale_floor=floor)
    assert found["scales_at_floor"] == 0.5
    assert found["unused_components"] == k - 1
    assert abs(found["effective_components"] - 1.0) < 1e-3


# ---------------------------------------------------------------------------------------------
# Marginals: `(log_weights, means, scales)`, each `[..., D, K]`.


def ref_marginals(name, params):
    """Float64 numpy: each dimension's 1-D mixture (log weights, means, standard deviations)."""
    logits, means, third = (np.asarray(p, np.float64) for p in params)
    log_w = logits - logsumexp(logits, axis=-1, keepdims=True)
    if name == "per_dim":
        return log_w, means, third
    if name == "joint":
        stds = third
    else:  # full: sqrt of the diagonal of L L^T, L the lower triangle
        tril = np.tril(third)
        stds = np.sqrt(np.diagonal(tril @ np.swapaxes(tril, -1, -2), axis1=-2, axis2=-1))
    d = means.shape[-1]
    log_w = np.repeat(log_w[..., None, :], d, axis=-2)
    return log_w, np.swapaxes(means, -1, -2), np.swapaxes(stds, -1, -2)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch", [(), (3,), (2, 4)])
@pytest.mark.parametrize("transform", ["eager", "jit", "vmap"])
def test_marginals_match_a_float64_reference(name, batch, transform):
    k, d = 4, 3
    params = make_params(name, batch, k, d, np.random.default_rng(len(batch) + 7))
    mixture = getattr(mdn, name)(*params)
    marginals = mdn.mixture.marginals
    if transform == "jit":
        found = jax.jit(marginals)(mixture)
    elif transform == "vmap" and batch:
        found = jax.vmap(marginals)(mixture)
    else:
        found = marginals(mixture)
    for got, want in zip(found, ref_marginals(name, params), strict=True):
        assert got.shape == batch + (d, k) and got.dtype == jnp.float32
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name", NAMES)
def test_marginal_densities_match_scipy(name):
    """The 1-D mixtures are the true marginals: check against scipy's (multivariate) normals."""
    k, d = 3, 3
    params = make_params(name, (2,), k, d, np.random.default_rng(11))
    log_w, means, scales = jax.jit(mdn.mixture.marginals)(getattr(mdn, name)(*params))
    logits, mu, third = (np.asarray(p, np.float64) for p in params)
    y = np.random.default_rng(12).normal(0.0, 2.0, (2, d))
    for b in range(2):
        for dim in range(d):
            found = logsumexp(
                np.asarray(log_w[b, dim], np.float64)
                + stats.norm.logpdf(y[b, dim], means[b, dim], scales[b, dim])
            )
            if name == "per_dim":
                lw, m, s = logits[b, dim], mu[b, dim], third[b, dim]
            elif name == "joint":
                lw, m, s = logits[b], mu[b, :, dim], third[b, :, dim]
            else:
                tril = np.tril(third[b])
                cov = tril @ np.swapaxes(tril, -1, -2)  # [K, D, D]
                lw, m, s = logits[b], mu[b, :, dim], np.sqrt(cov[:, dim, dim])
            want = logsumexp(lw - logsumexp(lw) + stats.norm.logpdf(y[b, dim], m, s))
            np.testing.assert_allclose(found, want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# No structure-name comparisons outside the structure modules and config validation.


def name_comparisons(source: str) -> list[int]:
    """Line numbers where `source` compares something with a structure's name string, whether
    by `==`/`!=`/`in`/`not in` (also against a literal tuple, list or set) or in a `match`."""

    def names_in(node):
        if isinstance(node, ast.Constant):
            return node.value in NAMES if isinstance(node.value, str) else False
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return any(names_in(element) for element in node.elts)
        return False

    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(
            names_in(operand) for operand in [node.left, *node.comparators]
        ):
            lines.append(node.lineno)
        if isinstance(node, ast.MatchValue) and names_in(node.value):
            lines.append(node.lineno)
    return lines


def test_the_name_scan_catches_every_form_of_comparison():
    caught = """
a = kind == "joint"
b = "per_dim" != kind
c = kind in ("per_dim", "full")
d = kind not in ["joint"]
match kind:
    case "full":
        pass
"""
    assert name_comparisons(caught) == [2, 3, 4, 5, 7]
    passed = (
        'x = structure or "joint"\nchoices = ("joint", "per_dim", "full")\ny = kind == "jointly"\n'
    )
    assert name_comparisons(passed) == []


def test_no_structure_name_comparison_outside_the_structure_modules():
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in ALLOWED:
            continue
        lines = name_comparisons(path.read_text())
        if lines:
            found[str(relative)] = lines
    assert not found, f"compare structure names only in structures/ or config.py: {found}"
