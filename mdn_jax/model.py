"""The network: input encoding, MLP trunk and MDN head (the only Flax code in mdn_jax).

Build once with `init(config, key=...)`, which returns `(graphdef, params)`; from then on the
forward pass `apply(graphdef, params, x)` is a pure function of `params` that returns a
mixture pytree (see `mdn_jax.mixture`) and composes with `jax.jit`, `jax.grad` and `jax.vmap`.
The config is `mdn_jax.config.ModelConfig`, the input encodings are in `mdn_jax.encoding`, the
data-driven starting values (`spread_means`, `normalisation_from_data`) in
`mdn_jax.initialisation`; all are re-exported here, where they used to live.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from mdn_jax import config as cfg
from mdn_jax import encoding, structures
from mdn_jax import mixture as mx
from mdn_jax.config import DTYPES as DTYPES
from mdn_jax.config import MEAN_ACTIVATIONS as MEAN_ACTIVATIONS
from mdn_jax.config import STRUCTURES as STRUCTURES
from mdn_jax.config import ModelConfig
from mdn_jax.encoding import fourier_encode as fourier_encode
from mdn_jax.encoding import fourier_matrix as fourier_matrix
from mdn_jax.initialisation import normalisation_from_data as normalisation_from_data
from mdn_jax.initialisation import spread_means as spread_means

ACTIVATIONS = {name: getattr(jax.nn, name) for name in cfg.ACTIVATIONS}


def head_size(
    config: ModelConfig | None = None,
    *,
    structure: str | None = None,
    components: int | None = None,
    out_features: int | None = None,
) -> int:
    """Number of raw head outputs for a structure, K and D (from `config` or keywords)."""
    k = components or config.components
    d = out_features or config.out_features
    return structures.named(structure or config.structure).head_size(components=k, out_features=d)


class MDNHead(nnx.Module):
    """A mixture density head for any features: `[..., in_features] -> Mixture` with batch `[...]`.

    Use it on top of your own NNX trunk; `MDN` below is this head on an MLP trunk. The options
    are `config.HEAD_OPTIONS`, checked by the same validators as `ModelConfig`'s fields.
    """

    def __init__(
        self,
        in_features: int,
        *,
        out_features: int,
        components: int,
        structure: str = ModelConfig.structure,
        scale_floor: float = ModelConfig.scale_floor,
        mean_activation: str = ModelConfig.mean_activation,
        rngs: nnx.Rngs,
    ):
        options = dict(
            structure=structure,
            components=components,
            out_features=out_features,
            scale_floor=scale_floor,
            mean_activation=mean_activation,
        )
        ModelConfig.check_fields(options)
        # A tuple, not a dict: static module attributes must be hashable for the graphdef.
        self.options = tuple((name, options[name]) for name in cfg.HEAD_OPTIONS)
        size = head_size(structure=structure, components=components, out_features=out_features)
        self.linear = nnx.Linear(in_features, size, rngs=rngs)

    def __call__(self, features: jax.Array) -> mx.Mixture:
        return head_to_mixture(self.linear(features), **dict(self.options))


class MDN(nnx.Module):
    """Encoding, MLP trunk and mixture head: `x [..., in_features] -> Mixture`, batch `[...]`."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.encoding = encoding.for_config(config, rngs=rngs)
        widths = (self.encoding.width,) + config.hidden
        # bfloat16: each layer casts its float32 input and kernel to bfloat16 for the product (the
        # params stay float32, so gradients and Adam do too); None keeps float32 as it was.
        compute = None if config.dtype == "float32" else jnp.dtype(config.dtype)
        self.trunk = nnx.List(
            [nnx.Linear(a, b, dtype=compute, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])]
        )
        self.head = MDNHead(widths[-1], **head_options(config), rngs=rngs)
        if config.head_init_scale != 1.0:
            self.head.linear.kernel[...] = self.head.linear.kernel[...] * config.head_init_scale
        if config.mean_init is not None:
            bias = self.head.linear.bias[...]
            self.head.linear.bias[...] = bias.at[mean_bias_indices(config)].set(_mean_bias(config))

    def __call__(self, x: jax.Array) -> mx.Mixture:
        config = self.config
        x = jnp.asarray(x, jnp.result_type(x, jnp.float32))  # integer inputs become float32
        if config.input_offset is not None:
            x = x - jnp.asarray(config.input_offset, x.dtype)
        if config.input_scale is not None:
            x = x / jnp.asarray(config.input_scale, x.dtype)
        x = self.encoding(x)
        activation = ACTIVATIONS[config.activation]
        for layer in self.trunk:
            x = activation(layer(x))
        if x.dtype != jnp.float32:  # the head and the likelihood run in float32
            x = x.astype(jnp.float32)
        # Not `self.head(x)`: the standalone MDNHead keeps softplus scales, the model's config
        # says which (`scale_activation`).
        return head_to_mixture(self.head.linear(x), **mixture_options(config))


def head_to_mixture(
    raw: jax.Array,
    *,
    structure: str,
    components: int,
    out_features: int,
    scale_floor: float,
    mean_activation: str = "none",
    scale_activation: str = "softplus",
) -> mx.Mixture:
    """Turn raw head outputs `[..., head_size]` into a mixture with batch shape `[...]`.

    Scales (and Cholesky diagonals) are `softplus(raw) + scale_floor` (`exp(raw) + scale_floor`
    with scale_activation='exp'); means are the raw values or, with mean_activation='sigmoid',
    squashed into (0, 1).
    """
    return structures.named(structure).head_to_mixture(
        raw,
        components=components,
        out_features=out_features,
        scale_floor=scale_floor,
        mean_activation=mean_activation,
        scale_activation=scale_activation,
    )


def mean_bias_indices(config: ModelConfig):
    """Indices into the head's raw outputs of the component means, shaped `[K, D]`."""
    return structures.named(config.structure).mean_bias_indices(
        components=config.components, out_features=config.out_features
    )


def _mean_bias(config: ModelConfig) -> jax.Array:
    means = jnp.asarray(config.mean_init, jnp.float32)
    return jnp.log(means) - jnp.log1p(-means) if config.mean_activation == "sigmoid" else means


def head_options(config: ModelConfig) -> dict[str, Any]:
    """The keyword arguments of `head_to_mixture` for a model config."""
    return {name: getattr(config, name) for name in cfg.HEAD_OPTIONS}


def mixture_options(config: ModelConfig) -> dict[str, Any]:
    """Every keyword argument of `head_to_mixture` for a model config: `head_options` and the
    config's `scale_activation`."""
    return {**head_options(config), "scale_activation": config.scale_activation}


def init(config: ModelConfig, *, key: jax.Array) -> tuple[nnx.GraphDef, nnx.State]:
    """Build the network and split it once into `(graphdef, params)`."""
    return nnx.split(MDN(config, rngs=nnx.Rngs(params=key)))


def apply(graphdef: nnx.GraphDef, params: nnx.State, x: jax.Array) -> mx.Mixture:
    """Pure forward pass: `x [..., in_features] -> Mixture` with batch shape `[...]`."""
    return nnx.merge(graphdef, params)(x)


def config_of(graphdef: nnx.GraphDef, params: nnx.State) -> ModelConfig:
    """The ModelConfig a split model was built from."""
    return nnx.merge(graphdef, params).config
