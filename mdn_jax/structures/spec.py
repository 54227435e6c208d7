"""The table entry a structure fills in: every piece of mixture code that depends on its layout.

Shapes: `...` batch axes, K components, D output dimensions. "weight sets" are the axes the
log weights carry besides K: `[...]` for a structure with one set of weights (joint, full),
`[..., D]` for per_dim.

To add a structure, write one module beside `joint.py` that defines its NamedTuple, these
functions and a `STRUCTURE = Structure(...)`, and list it in `structures/__init__.py`.
To add a per-structure operation (a closed-form likelihood gradient, say), add one field here
and one function to each structure module; `tests/test_structures.py` checks none is missing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable


@dataclasses.dataclass(frozen=True, kw_only=True)
class Structure:
    """One structure's code. Every field but `name` and `mixture_type` is a pure function.

    Attributes:
      name: the name users pass as `ModelConfig.structure` and `structure(mixture)` returns.
      mixture_type: its NamedTuple (a pytree).
      create: the public constructor (`mdn_jax.joint`, ...), validating shapes.
      event_size: `mixture -> D`.
      batch_shape: `mixture -> ...`.
      component_log_probs: `(mixture, y [..., D]) -> [..., K]` or `[..., D, K]` (per weight set).
      log_prob: `(mixture, y [..., D]) -> [...]`.
      component_means: `mixture -> [..., K, D]`.
      component_variances: `mixture -> [..., K, D]` (marginal variances of each component).
      mean: `mixture -> [..., D]`, exact.
      variance: `mixture -> [..., D]`, exact marginal variance.
      most_probable_component: `mixture -> [...]` int32.
      sample: `(key, mixture, *, sample_shape, temperature, sigma_temperature)
        -> sample_shape + [..., D]`.
      coherent_draw: `(mixture, uniform [S..., 1...], normal [S..., 1..., D], *, temperature,
        sigma_temperature) -> [S..., ..., D]`: every element of the batch uses the same shared
        uniform (inverse CDF of its tempered weights, see `shared.inverse_cdf_one_hot`) and
        the same standard-normal vector (see `mdn_jax.coherent`).
      entropy_of_weights: `mixture -> [...]` nats, summed over weight sets.
      marginals: `mixture -> (log_weights, means, scales)`, each `[..., D, K]`: dimension d's
        marginal density is the 1-D mixture sum_k exp(log_weights[d, k]) N(means[d, k],
        scales[d, k]^2).
      floored_scales: `mixture -> array` of every value the head floors at `scale_floor`
        (standard deviations, or Cholesky diagonals), any shape.
      discretised_log_prob: `(mixture, y [..., D], *, bin_width, low, high) -> [...]`, the log
        mass of y's bins (see `mdn_jax.discretised`).
      head_size: `(*, components, out_features) -> int`, raw head outputs per input.
      head_to_mixture: `(raw [..., head_size], *, components, out_features, scale_floor,
        mean_activation, scale_activation='softplus') -> mixture` with batch `[...]`.
      fast_head: the same arguments `-> mdn_jax.fastgrad` head (`JointHead`, `PerDimHead` or
        `FullHead`): the same distribution as `head_to_mixture`'s, with log-scales (log
        Cholesky diagonals) computed directly, for the closed-form losses of the training step.
      mean_bias_indices: `(*, components, out_features) -> int array [K, D]`, where each
        component mean sits among the raw head outputs.
      combine_members: `(mixture, *, axis) -> mixture`: M members stacked on batch axis `axis`
        (counted from the front) as ONE mixture of the same density as their equal-weight
        average, without that axis (see `mdn_jax.ensemble`). Joint and full give M * K
        components of their own structure; per_dim members give a joint mixture (see there).
      transposed_log_prob: `(raw_t [head_size, B], y [B, D], *, <head_to_mixture's options>)
        -> [B]`, the log density of `head_to_mixture(raw_t.T)` computed with the batch as the
        minor axis (the training step's fast layout on CPU), or None where the structure has
        none (its training loss then goes through `head_to_mixture`).
    """

    name: str
    mixture_type: type
    create: Callable
    event_size: Callable
    batch_shape: Callable
    component_log_probs: Callable
    log_prob: Callable
    component_means: Callable
    component_variances: Callable
    mean: Callable
    variance: Callable
    most_probable_component: Callable
    sample: Callable
    coherent_draw: Callable
    entropy_of_weights: Callable
    marginals: Callable
    floored_scales: Callable
    discretised_log_prob: Callable
    head_size: Callable
    head_to_mixture: Callable
    fast_head: Callable
    mean_bias_indices: Callable
    combine_members: Callable
    transposed_log_prob: Callable | None = None
