"""A mixture as a distrax, numpyro or TFP distribution, for workflows built on those libraries.

`to_distrax(mixture)`, `to_numpyro(mixture)` and `to_tfp(mixture)` (TensorFlow Probability on
JAX) return the same density as `mdn_jax.log_prob`:

- joint:   `MixtureSameFamily(Categorical(logits), MultivariateNormalDiag(means, scales))`;
- per_dim: D independent `MixtureSameFamily(Categorical, Normal)`, one event of size D;
- full:    `MixtureSameFamily(Categorical(logits), MultivariateNormalTri(means, scale_tril))`.

Batch shape `[...]`, event shape `[D]`. Temperatures are applied to the parameters first, with
`mdn_jax.sample`'s meaning: the weights become `softmax(logits / temperature)` and every
standard deviation (every Cholesky factor) is multiplied by `sigma_temperature`; sampling the
returned distribution then draws from the same law as
`mdn_jax.sample(key, mixture, temperature=..., sigma_temperature=...)`. A distribution needs a
density, so `sigma_temperature` must be positive; `temperature = 0` keeps only the heaviest
component(s).

All three are optional: `pip install "mdn_jax[distrax]"`, `"mdn_jax[numpyro]"` or `"mdn_jax[tfp]"`.
"""

from __future__ import annotations

import importlib

import jax.numpy as jnp

from mdn_jax.mixture import FullMixture, JointMixture, Mixture, PerDimMixture


def _import(module: str, extra: str):
    """`module`, or one ImportError line naming the mdn_jax extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"to_{extra} needs {module.split('.')[0]}, which is not installed; "
            f'install it with: pip install "mdn_jax[{extra}]"'
        ) from None


def tempered(
    mixture: Mixture, *, temperature: float = 1.0, sigma_temperature: float = 1.0
) -> Mixture:
    """The mixture with the temperatures folded into its parameters (same structure and shapes).

    Logits become `logits / temperature` (at 0: 0 for the heaviest component(s) and a huge
    negative number for the rest, whose weights become exactly 0); scales, or Cholesky factors,
    are multiplied by `sigma_temperature`.
    """
    for name, value in (("temperature", temperature), ("sigma_temperature", sigma_temperature)):
        if isinstance(value, (int, float)) and not value >= 0:
            raise ValueError(f"{name} must be non-negative, got {value!r}")
    if isinstance(sigma_temperature, (int, float)) and sigma_temperature == 0:
        raise ValueError(
            "sigma_temperature must be positive for a distribution (0 leaves no density); "
            "use mdn_jax.sample with sigma_temperature=0 for point estimates"
        )
    logits = mixture.logits
    # Not -inf for the others: numpyro's argument validation rejects infinite logits.
    lightest = jnp.finfo(logits.dtype).min / 2
    heaviest = jnp.where(logits == jnp.max(logits, axis=-1, keepdims=True), 0.0, lightest)
    safe = jnp.where(temperature > 0, temperature, 1.0)
    logits = jnp.where(temperature > 0, logits / safe, heaviest.astype(logits.dtype))
    return mixture._replace(
        logits=logits, **{_scale_field(mixture): _scale(mixture) * sigma_temperature}
    )


def _scale_field(mixture: Mixture) -> str:
    return "scale_tril" if isinstance(mixture, FullMixture) else "scales"


def _scale(mixture: Mixture):
    return getattr(mixture, _scale_field(mixture))


def _build(library, mixture: Mixture, temperature, sigma_temperature):
    """The distribution through `library`, an adapter with the four constructors below."""
    mixture = tempered(mixture, temperature=temperature, sigma_temperature=sigma_temperature)
    weights = library.categorical(mixture.logits)
    if isinstance(mixture, JointMixture):
        return library.mixture(weights, library.diagonal(mixture.means, mixture.scales))
    if isinstance(mixture, FullMixture):
        return library.mixture(weights, library.tril(mixture.means, mixture.scale_tril))
    if isinstance(mixture, PerDimMixture):
        per_dimension = library.mixture(weights, library.normal(mixture.means, mixture.scales))
        return library.independent(per_dimension)  # [..., D] batch -> one event of size D
    raise TypeError(
        f"expected a mixture from mdn_jax.joint/per_dim/full, got {type(mixture).__name__}"
    )


class _Distrax:
    def __init__(self):
        self.d = _import("distrax", "distrax")

    def categorical(self, logits):
        return self.d.Categorical(logits=logits)

    def mixture(self, weights, components):
        return self.d.MixtureSameFamily(weights, components)

    def diagonal(self, means, scales):
        return self.d.MultivariateNormalDiag(means, scales)

    def tril(self, means, scale_tril):
        return self.d.MultivariateNormalTri(means, scale_tril, is_lower=True)

    def normal(self, means, scales):
        return self.d.Normal(means, scales)

    def independent(self, distribution):
        return self.d.Independent(distribution, reinterpreted_batch_ndims=1)


class _NumPyro:
    def __init__(self):
        self.d = _import("numpyro.distributions", "numpyro")

    def categorical(self, logits):
        return self.d.Categorical(logits=logits)

    def mixture(self, weights, components):
        return self.d.MixtureSameFamily(weights, components)

    def diagonal(self, means, scales):
        return self.d.Normal(means, scales).to_event(1)

    def tril(self, means, scale_tril):
        return self.d.MultivariateNormal(means, scale_tril=scale_tril)

    def normal(self, means, scales):
        return self.d.Normal(means, scales)

    def independent(self, distribution):
        return distribution.to_event(1)


class _TFP(_Distrax):
    """TensorFlow Probability on JAX: distrax's constructors under TFP's names."""

    def __init__(self):
        self.d = _import("tensorflow_probability.substrates.jax.distributions", "tfp")

    def diagonal(self, means, scales):
        return self.d.MultivariateNormalDiag(means, scales)

    def tril(self, means, scale_tril):
        return self.d.MultivariateNormalTriL(means, scale_tril)


def to_distrax(mixture: Mixture, *, temperature: float = 1.0, sigma_temperature: float = 1.0):
    """The mixture as a `distrax.Distribution`: batch shape `[...]`, event shape `[D]`.

    Temperatures as in `mdn_jax.sample`, applied to the parameters first (see `tempered`).
    Needs distrax (`pip install "mdn_jax[distrax]"`).
    """
    return _build(_Distrax(), mixture, temperature, sigma_temperature)


def to_numpyro(mixture: Mixture, *, temperature: float = 1.0, sigma_temperature: float = 1.0):
    """The mixture as a `numpyro.distributions.Distribution`: batch shape `[...]`, event
    shape `[D]`.

    Temperatures as in `mdn_jax.sample`, applied to the parameters first (see `tempered`).
    Needs numpyro (`pip install "mdn_jax[numpyro]"`).
    """
    return _build(_NumPyro(), mixture, temperature, sigma_temperature)


def to_tfp(mixture: Mixture, *, temperature: float = 1.0, sigma_temperature: float = 1.0):
    """The mixture as a TensorFlow Probability (on JAX) distribution: batch `[...]`, event `[D]`.

    Temperatures as in `mdn_jax.sample`, applied to the parameters first (see `tempered`).
    Needs TFP's JAX substrate (`pip install "mdn_jax[tfp]"`).
    """
    return _build(_TFP(), mixture, temperature, sigma_temperature)
