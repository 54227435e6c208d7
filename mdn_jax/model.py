"""The network: input encoding, MLP trunk and MDN head (the only Flax code in mdn_jax).

Build once with `init(config, key=...)`, which returns `(graphdef, params)`; from then on the
forward pass `apply(graphdef, params, x)` is a pure function of `params` that returns a
mixture pytree (see `mdn_jax.mixture`) and composes with `jax.jit`, `jax.grad` and `jax.vmap`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from mdn_jax import mixture as mx
from mdn_jax import structures

STRUCTURES = ("joint", "per_dim", "full")
ACTIVATIONS = {
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "tanh": jnp.tanh,
    "softplus": jax.nn.softplus,
    "elu": jax.nn.elu,
}
MEAN_ACTIVATIONS = ("none", "sigmoid")
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Everything that defines the network; JSON-serialisable via `to_dict`/`from_dict`.

    Attributes:
      in_features: size of an input vector x `[..., in_features]`.
      out_features: D, size of an output vector y `[..., D]`.
      hidden: widths of the trunk's hidden layers (reference: 100,100,100,100,100,50).
      activation: trunk non-linearity, one of `ACTIVATIONS`.
      components: K, number of mixture components.
      structure: 'joint' (default, Bishop), 'per_dim' (the reference example) or 'full'.
      scale_floor: smallest standard deviation (and Cholesky diagonal) the head can output;
        scales are `softplus(raw) + scale_floor`, smooth and strictly positive.
      mean_activation: 'none' (unbounded means) or 'sigmoid' (means in (0, 1)).
      input_offset, input_scale: input normalisation `(x - offset) / scale`, applied inside
        the model so every later use (training, rendering) maps inputs the same way; `None`
        means identity.
      fourier_features: m > 0 encodes the normalised input x as `[sin(2 pi x B), cos(2 pi x B)]`
        with a fixed random `B [in_features, m]` of standard deviation `fourier_scale`
        (random Fourier features, Tancik et al. 2020): coordinate MLPs on raw inputs are
        blurry, this lets them learn sharp edges. 0 (default) feeds x as it is.
      fourier_scale: standard deviation of B, in cycles per unit of normalised input.
      fourier_seed: seeds B (numpy, fixed at build time, so it is part of the config, not params).
      dtype: compute dtype of the trunk's matrix products, 'float32' (default) or 'bfloat16'
        (mixed precision: params, gradients and optimiser state stay float32; inputs, the
        Fourier encoding, the head and the mixture likelihood are float32 too).
      mean_init: optional initial component means, K rows of D values (for per_dim, row k
        gives component k of every dimension): written into the head's bias so that training
        starts with the components spread over the data (see `spread_means`). None: the
        usual random initialisation.
      head_init_scale: multiplies the head's initial weights; below 1 the head starts close
        to its bias (uniform weights, the `mean_init` means) and grows from there.
    """

    in_features: int = 2
    out_features: int = 3
    hidden: tuple[int, ...] = (100, 100, 100, 100, 100, 50)
    activation: str = "relu"
    components: int = 10
    structure: str = "joint"
    scale_floor: float = 1e-3
    mean_activation: str = "none"
    input_offset: tuple[float, ...] | None = None
    input_scale: tuple[float, ...] | None = None
    fourier_features: int = 0
    fourier_scale: float = 10.0
    fourier_seed: int = 0
    dtype: str = "float32"
    mean_init: tuple[tuple[float, ...], ...] | None = None
    head_init_scale: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.mean_init is not None:
            try:
                rows = tuple(tuple(float(v) for v in row) for row in self.mean_init)
            except (TypeError, ValueError):
                raise ValueError(
                    f"mean_init must be {self.components} rows of {self.out_features} numbers, "
                    f"got {self.mean_init!r}"
                ) from None
            object.__setattr__(self, "mean_init", rows)
        for name in ("input_offset", "input_scale"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(
                f"model config has unknown keys {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**values)


def validate(config: ModelConfig) -> None:
    """Raise ValueError naming the bad field and the fix."""

    def positive_int(name, value):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")

    positive_int("in_features", config.in_features)
    positive_int("out_features", config.out_features)
    positive_int("components", config.components)
    for width in config.hidden:
        positive_int("every hidden width", width)
    if config.structure not in STRUCTURES:
        raise ValueError(
            f"structure must be one of {', '.join(STRUCTURES)}, got {config.structure!r}"
        )
    if config.activation not in ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {', '.join(ACTIVATIONS)}, got {config.activation!r}"
        )
    if config.mean_activation not in MEAN_ACTIVATIONS:
        raise ValueError(
            f"mean_activation must be 'none' or 'sigmoid', got {config.mean_activation!r}"
        )
    if not (
        isinstance(config.scale_floor, (int, float))
        and math.isfinite(config.scale_floor)
        and config.scale_floor > 0
    ):
        raise ValueError(f"scale_floor must be a positive number, got {config.scale_floor!r}")
    for name in ("input_offset", "input_scale"):
        value = getattr(config, name)
        if value is not None:
            if len(value) != config.in_features:
                raise ValueError(
                    f"{name} needs {config.in_features} values (one per input), got {len(value)}"
                )
            if not all(math.isfinite(v) for v in value):
                raise ValueError(f"{name} must be finite, got {value}")
    if not isinstance(config.fourier_features, int) or config.fourier_features < 0:
        raise ValueError(
            f"fourier_features must be a non-negative integer, got {config.fourier_features!r}"
        )
    if not (
        isinstance(config.fourier_scale, (int, float))
        and math.isfinite(config.fourier_scale)
        and config.fourier_scale > 0
    ):
        raise ValueError(f"fourier_scale must be a positive number, got {config.fourier_scale!r}")
    if config.dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {config.dtype!r}")
    if config.input_scale is not None and any(v <= 0 for v in config.input_scale):
        raise ValueError(f"input_scale must be positive, got {config.input_scale}")
    if config.mean_init is not None:
        shape = (len(config.mean_init), *{len(row) for row in config.mean_init})
        if shape != (config.components, config.out_features):
            raise ValueError(
                f"mean_init must be {config.components} rows (components) of {config.out_features} "
                f"values (outputs), got {len(config.mean_init)} rows of lengths "
                f"{sorted({len(row) for row in config.mean_init})}"
            )
        if not all(math.isfinite(v) for row in config.mean_init for v in row):
            raise ValueError("mean_init must be finite")
        if config.mean_activation == "sigmoid" and not all(
            0 < v < 1 for row in config.mean_init for v in row
        ):
            raise ValueError("mean_init must lie in (0, 1) with mean_activation='sigmoid'")
    if not (
        isinstance(config.head_init_scale, (int, float))
        and math.isfinite(config.head_init_scale)
        and config.head_init_scale > 0
    ):
        raise ValueError(
            f"head_init_scale must be a positive number, got {config.head_init_scale!r}"
        )


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

    Use it on top of your own NNX trunk; `MDN` below is this head on an MLP trunk.
    """

    def __init__(
        self,
        in_features: int,
        *,
        out_features: int,
        components: int,
        structure: str = "joint",
        scale_floor: float = 1e-3,
        mean_activation: str = "none",
        rngs: nnx.Rngs,
    ):
        # Validate through the same checks as a full model config.
        ModelConfig(
            out_features=out_features,
            components=components,
            structure=structure,
            scale_floor=scale_floor,
            mean_activation=mean_activation,
        )
        # A tuple, not a dict: static module attributes must be hashable for the graphdef.
        self.options = (
            ("structure", structure),
            ("components", components),
            ("out_features", out_features),
            ("scale_floor", scale_floor),
            ("mean_activation", mean_activation),
        )
        size = head_size(structure=structure, components=components, out_features=out_features)
        self.linear = nnx.Linear(in_features, size, rngs=rngs)

    def __call__(self, features: jax.Array) -> mx.Mixture:
        return head_to_mixture(self.linear(features), **dict(self.options))


class MDN(nnx.Module):
    """MLP trunk plus mixture head: `x [..., in_features] -> Mixture` with batch shape `[...]`."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        encoded = 2 * config.fourier_features if config.fourier_features else config.in_features
        widths = (encoded,) + config.hidden
        # bfloat16: each layer casts its float32 input and kernel to bfloat16 for the product (the
        # params stay float32, so gradients and Adam do too); None keeps float32 as it was.
        compute = None if config.dtype == "float32" else jnp.dtype(config.dtype)
        self.trunk = nnx.List(
            [nnx.Linear(a, b, dtype=compute, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])]
        )
        self.head = MDNHead(
            widths[-1],
            out_features=config.out_features,
            components=config.components,
            structure=config.structure,
            scale_floor=config.scale_floor,
            mean_activation=config.mean_activation,
            rngs=rngs,
        )
        if config.head_init_scale != 1.0:
            self.head.linear.kernel[...] = self.head.linear.kernel[...] * config.head_init_scale
        if config.mean_init is not None:
            bias = self.head.linear.bias[...]
            self.head.linear.bias[...] = bias.at[mean_bias_indices(config)].set(_mean_bias(config))

    def features(self, x: jax.Array) -> jax.Array:
        """Trunk output `[..., hidden[-1]]` for inputs `[..., in_features]`."""
        config = self.config
        x = jnp.asarray(x, jnp.result_type(x, jnp.float32))  # integer inputs become float32
        if config.input_offset is not None:
            x = x - jnp.asarray(config.input_offset, x.dtype)
        if config.input_scale is not None:
            x = x / jnp.asarray(config.input_scale, x.dtype)
        if config.fourier_features:
            x = fourier_encode(x, fourier_matrix(config))
        activation = ACTIVATIONS[config.activation]
        for layer in self.trunk:
            x = activation(layer(x))
        if x.dtype != jnp.float32:  # the head and the likelihood run in float32
            x = x.astype(jnp.float32)
        return x

    def __call__(self, x: jax.Array) -> mx.Mixture:
        return self.head(self.features(x))


def fourier_matrix(config: ModelConfig):
    """The fixed random frequencies `B [in_features, fourier_features]` (a numpy constant)."""
    import numpy as np

    rng = np.random.default_rng(config.fourier_seed)
    return (
        rng.normal(size=(config.in_features, config.fourier_features)) * config.fourier_scale
    ).astype(np.float32)


def fourier_encode(x: jax.Array, frequencies) -> jax.Array:
    """`x [..., in]` to `[..., 2m]`: sines and cosines of `2 pi x B` for `B [in, m]`."""
    angles = 2.0 * math.pi * (x @ jnp.asarray(frequencies, x.dtype))
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def head_to_mixture(
    raw: jax.Array,
    *,
    structure: str,
    components: int,
    out_features: int,
    scale_floor: float,
    mean_activation: str = "none",
) -> mx.Mixture:
    """Turn raw head outputs `[..., head_size]` into a mixture with batch shape `[...]`.

    Scales (and Cholesky diagonals) are `softplus(raw) + scale_floor`; means are the raw values
    or, with mean_activation='sigmoid', squashed into (0, 1).
    """
    return structures.named(structure).head_to_mixture(
        raw,
        components=components,
        out_features=out_features,
        scale_floor=scale_floor,
        mean_activation=mean_activation,
    )


def mean_bias_indices(config: ModelConfig):
    """Indices into the head's raw outputs of the component means, shaped `[K, D]`."""
    return structures.named(config.structure).mean_bias_indices(
        components=config.components, out_features=config.out_features
    )


def _mean_bias(config: ModelConfig) -> jax.Array:
    means = jnp.asarray(config.mean_init, jnp.float32)
    return jnp.log(means) - jnp.log1p(-means) if config.mean_activation == "sigmoid" else means


def spread_means(ys, components: int, *, seed: int = 0) -> tuple[tuple[float, ...], ...]:
    """K outputs spread over the data `ys [N, D]`, for `ModelConfig.mean_init`.

    Farthest-point sampling: start from the output nearest the data mean, then repeatedly take
    the output farthest from all chosen so far (over a seeded subsample of at most 20,000
    rows), so the K means cover the range of the data, corners included. Duplicates (data with
    fewer than K distinct outputs) are allowed.
    """
    import numpy as np

    ys = np.asarray(ys, np.float64)
    if ys.ndim != 2 or not len(ys) or not np.all(np.isfinite(ys)):
        raise ValueError("spread_means needs finite outputs shaped [N, D] with N >= 1")
    if len(ys) > 20_000:
        ys = ys[np.random.default_rng(seed).choice(len(ys), 20_000, replace=False)]
    chosen = [int(np.argmin(np.sum((ys - ys.mean(axis=0)) ** 2, axis=1)))]
    distance = np.sum((ys - ys[chosen[0]]) ** 2, axis=1)
    for _ in range(components - 1):
        chosen.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.sum((ys - ys[chosen[-1]]) ** 2, axis=1))
    return tuple(tuple(float(v) for v in ys[i]) for i in chosen)


def head_options(config: ModelConfig) -> dict[str, Any]:
    """The keyword arguments of `head_to_mixture` for a model config."""
    return dict(
        structure=config.structure,
        components=config.components,
        out_features=config.out_features,
        scale_floor=config.scale_floor,
        mean_activation=config.mean_activation,
    )


def init(config: ModelConfig, *, key: jax.Array) -> tuple[nnx.GraphDef, nnx.State]:
    """Build the network and split it once into `(graphdef, params)`."""
    return nnx.split(MDN(config, rngs=nnx.Rngs(params=key)))


def apply(graphdef: nnx.GraphDef, params: nnx.State, x: jax.Array) -> mx.Mixture:
    """Pure forward pass: `x [..., in_features] -> Mixture` with batch shape `[...]`."""
    return nnx.merge(graphdef, params)(x)


def features(graphdef: nnx.GraphDef, params: nnx.State, x: jax.Array) -> jax.Array:
    """Pure trunk-only pass: `x [..., in_features] -> [..., hidden[-1]]`."""
    return nnx.merge(graphdef, params).features(x)


def config_of(graphdef: nnx.GraphDef, params: nnx.State) -> ModelConfig:
    """The ModelConfig a split model was built from."""
    return nnx.merge(graphdef, params).config


def count_params(params: Any) -> int:
    return sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(params))


def normalisation_from_data(xs: Sequence) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-feature mean and standard deviation of `xs [N, in]` (std 1 where a feature is constant)."""
    import numpy as np

    xs = np.asarray(xs, np.float64)
    std = xs.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return tuple(xs.mean(axis=0).tolist()), tuple(std.tolist())
