"""The configs: frozen, validated, JSON-serialisable dataclasses for the model and for training.

Every choice list and default lives here once; the model, the trainer and the command line
(`mdn_jax.cli`) read them from here. Each field names its validator in its metadata (`_field`,
from `mdn_jax.config_fields` with the validators and `_Config`), and `_Config` runs them, so a
new field is one line; checks that relate several fields sit in the config's `_check`. Plain
Python only (no JAX): the CLI imports this to build its parser (a hash-grid config alone
imports `mdn_jax.encoding` to check its grid, when it is built).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

# The field validators live in mdn_jax.config_fields; re-exported so `config.positive_int` and
# the rest keep working for the CLI's argument types and the other modules.
from mdn_jax.config_fields import BaseConfig as _Config
from mdn_jax.config_fields import Check as Check
from mdn_jax.config_fields import config_field as _field
from mdn_jax.config_fields import fraction_below_one as fraction_below_one
from mdn_jax.config_fields import is_positive as is_positive
from mdn_jax.config_fields import non_negative_int as non_negative_int
from mdn_jax.config_fields import one_of as one_of
from mdn_jax.config_fields import positive_int as positive_int
from mdn_jax.config_fields import positive_number as positive_number
from mdn_jax.config_fields import positive_number_or_none as positive_number_or_none
from mdn_jax.config_fields import positive_widths as _positive_widths
from mdn_jax.config_fields import unit_rate as unit_rate

# The reference example's trunk, Bishop-style: five layers of 100 and one of 50.
REFERENCE_TRUNK = (100, 100, 100, 100, 100, 50)
# The smallest standard deviation of image models, about 2.5/255 of a colour channel.
IMAGE_SCALE_FLOOR = 0.01

STRUCTURES = ("joint", "per_dim", "full")
ACTIVATIONS = ("relu", "gelu", "silu", "tanh", "softplus", "elu")  # names in jax.nn
MEAN_ACTIVATIONS = ("none", "sigmoid")
DTYPES = ("float32", "bfloat16")
SCALE_ACTIVATIONS = ("softplus", "exp")  # mdn_jax.structures.shared: scale = act(raw) + floor
SCHEDULES = ("constant", "cosine", "warmup_cosine")
LOSSES = ("nll", "discretised")
ON_NONFINITE = ("stop", "skip")
ENCODINGS = ("identity", "fourier", "hashgrid")  # mdn_jax.encoding's classes, by name
# The keyword arguments of `model.head_to_mixture` (and of `MDNHead`), in that order.
HEAD_OPTIONS = ("structure", "components", "out_features", "scale_floor", "mean_activation")


# ---------------------------------------------------------------------------------------------
# The configs.


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig(_Config):
    """Everything that defines the network; JSON-serialisable via `to_dict`/`from_dict`.

    Attributes:
      in_features: size of an input vector x `[..., in_features]`.
      out_features: D, size of an output vector y `[..., D]`.
      hidden: widths of the trunk's hidden layers (reference: 100,100,100,100,100,50).
      activation: trunk non-linearity, one of `ACTIVATIONS`.
      components: K, number of mixture components.
      structure: 'joint' (default, Bishop), 'per_dim' (the reference example) or 'full'.
      scale_floor: smallest standard deviation (and Cholesky diagonal) the head can output;
        scales are `exp(raw) + scale_floor` (see scale_activation), strictly positive.
      scale_activation: 'exp' (default; scales `exp(raw) + scale_floor`, the faster step) or
        'softplus'; configs saved before this field load as 'softplus', as they were trained.
      dropout: rate in [0, 1) of the trunk's hidden outputs zeroed in training only (keyed per
        step from the train state's key); 0 (default): none, and no random numbers drawn.
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
      encoding: 'identity' (default), 'fourier' or 'hashgrid' (see `mdn_jax.encoding`). For old
        configs, 'identity' with fourier_features > 0 becomes 'fourier', as it always behaved.
      hashgrid_levels, hashgrid_features, hashgrid_log2_table, hashgrid_min_res,
        hashgrid_max_res: the hash grid's levels L, features per level F, log2 of its rows per
        level, and its coarsest and finest cells per axis (`mdn_jax.hashgrid.HashGridConfig`;
        defaults from the photo probe: 8 x 4, 2^15, 16 to 256).
      hashgrid_low, hashgrid_high: the box of normalised inputs the hash grid spans, per input
        feature: `low` maps to 0 and `high` to 1, outside it the grid is clamped. None means -1
        and 1, the frame of the image normalisation (a whole image, any resolution).
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

    _KIND: ClassVar[str] = "model"
    _LEGACY: ClassVar[dict[str, Any]] = {"scale_activation": "softplus"}

    in_features: int = _field(2, positive_int)
    out_features: int = _field(3, positive_int)
    hidden: tuple[int, ...] = _field(REFERENCE_TRUNK, _positive_widths)
    activation: str = _field("relu", one_of(ACTIVATIONS))
    components: int = _field(10, positive_int)
    structure: str = _field("joint", one_of(STRUCTURES))
    scale_floor: float = _field(1e-3, positive_number)
    mean_activation: str = _field("none", one_of(MEAN_ACTIVATIONS, quoted=True))
    scale_activation: str = _field("exp", one_of(SCALE_ACTIVATIONS, quoted=True))
    dropout: float = _field(0.0, unit_rate)
    input_offset: tuple[float, ...] | None = None
    input_scale: tuple[float, ...] | None = None
    fourier_features: int = _field(0, non_negative_int)
    fourier_scale: float = _field(10.0, positive_number)
    fourier_seed: int = _field(0, non_negative_int)
    encoding: str = _field("identity", one_of(ENCODINGS))
    hashgrid_levels: int = _field(8, positive_int)
    hashgrid_features: int = _field(4, positive_int)
    hashgrid_log2_table: int = _field(15, positive_int)
    hashgrid_min_res: int = _field(16, positive_int)
    hashgrid_max_res: int = _field(256, positive_int)
    hashgrid_low: tuple[float, ...] | None = None
    hashgrid_high: tuple[float, ...] | None = None
    dtype: str = _field("float32", one_of(DTYPES))
    mean_init: tuple[tuple[float, ...], ...] | None = None
    head_init_scale: float = _field(1.0, positive_number)

    def __post_init__(self) -> None:
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
        for name in ("input_offset", "input_scale", "hashgrid_low", "hashgrid_high"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))
        if self.encoding == "identity" and is_positive(self.fourier_features, integer=True):
            object.__setattr__(self, "encoding", "fourier")  # configs from before `encoding`
        super().__post_init__()

    def _check(self) -> None:
        for name in ("input_offset", "input_scale", "hashgrid_low", "hashgrid_high"):
            value = getattr(self, name)
            if value is not None:
                if len(value) != self.in_features:
                    raise ValueError(
                        f"{name} needs {self.in_features} values (one per input), got {len(value)}"
                    )
                if not all(math.isfinite(v) for v in value):
                    raise ValueError(f"{name} must be finite, got {value}")
        if self.input_scale is not None and any(v <= 0 for v in self.input_scale):
            raise ValueError(f"input_scale must be positive, got {self.input_scale}")
        if self.mean_init is not None:
            self._check_mean_init()
        self._check_encoding()

    def _check_encoding(self) -> None:
        if self.encoding == "fourier" and not self.fourier_features:
            raise ValueError("encoding 'fourier' needs fourier_features > 0; set how many")
        if self.encoding != "hashgrid":
            return
        if self.fourier_features:
            raise ValueError(
                "encoding 'hashgrid' takes no Fourier features; set fourier_features to 0"
            )
        from mdn_jax import encoding  # JAX, so only when a hash grid is asked for

        encoding.check_hashgrid(self)

    def _check_mean_init(self) -> None:
        lengths = sorted({len(row) for row in self.mean_init})
        if (len(self.mean_init), *lengths) != (self.components, self.out_features):
            raise ValueError(
                f"mean_init must be {self.components} rows (components) of {self.out_features} "
                f"values (outputs), got {len(self.mean_init)} rows of lengths {lengths}"
            )
        if not all(math.isfinite(v) for row in self.mean_init for v in row):
            raise ValueError("mean_init must be finite")
        if self.mean_activation == "sigmoid" and not all(
            0 < v < 1 for row in self.mean_init for v in row
        ):
            raise ValueError("mean_init must lie in (0, 1) with mean_activation='sigmoid'")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig(_Config):
    """Optimisation settings; JSON-serialisable via `to_dict`/`from_dict`.

    Attributes:
      epochs: passes over the data.
      batch_size: samples per step.
      learning_rate: Adam's peak learning rate.
      schedule: 'constant', 'cosine' (decay to 0 over all steps) or 'warmup_cosine'
        (5% linear warm-up, then cosine decay).
      clip_norm: clip gradients to this global norm; None for no clipping.
      seed: seeds initialisation and the shuffle.
      loss: 'nll' (continuous negative log-likelihood) or 'discretised' (the mass of each
        target's 8-bit bin, for colours in [0, 1]; see mdn_jax.discretised).
      on_nonfinite: a step whose loss or gradient is not finite is never applied; 'stop'
        (default) then raises NonFiniteError after that epoch, naming the epoch and step;
        'skip' carries on and counts the skipped steps in the history ('skipped_steps').
      adam_b2, adam_eps: Adam's second-moment decay and epsilon (optax's defaults 0.999 and
        1e-8; a hash grid trains better with instant-ngp's 0.99 and 1e-15, README: Input
        encodings).
    """

    _KIND: ClassVar[str] = "train"

    epochs: int = _field(100, positive_int)
    batch_size: int = _field(200, positive_int)
    learning_rate: float = _field(1e-3, positive_number)
    schedule: str = _field("constant", one_of(SCHEDULES))
    clip_norm: float | None = _field(None, positive_number_or_none)
    seed: int = _field(0, non_negative_int)
    loss: str = _field("nll", one_of(LOSSES))
    on_nonfinite: str = _field("stop", one_of(ON_NONFINITE, quoted=True))
    adam_b2: float = _field(0.999, fraction_below_one)
    adam_eps: float = _field(1e-8, positive_number)
