"""Renders of a stacked fit (`mdn_jax.stacked.StackedFit`): the ensemble, or one member.

The ensemble renders as ONE mixture, the members' combined mixture (`mdn_jax.ensemble.combine`:
M x K components, weights 1/M x each member's), through the same chunked renderer as a single
model (`mdn_jax.render`): every method means the same thing for it. 'mode' is the mean of the
heaviest of all M x K components, 'mean' the average of the members' means, 'uncertainty' the
ensemble's predictive spread (the members' own spread plus their disagreement), 'component k'
is member k // K's component k % K, 'components' colours all M x K. Members trained with the
per_dim structure combine into a joint mixture of M x K^D components (see `ensemble.combine`),
so their ensemble renders take about K^D / K times the memory and time of a member's.

`member=m` renders member m alone, at its own widths and scale floor (`StackedFit.member`).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mdn_jax import ensemble, parallel
from mdn_jax import mixture as mx
from mdn_jax import model as mdl
from mdn_jax import render as rd
from mdn_jax import stacked_members as sm


@dataclasses.dataclass(frozen=True)
class EnsembleForward:
    """`((params [M, ...], floor_shifts [M]), positions [C, in]) -> the combined mixture [C]`
    of a padded stacked model (each member's scale floor restored as `StackedFit.predict`
    does). Hashable by value, so the renderer compiles it once per (method, chunk)."""

    graphdef: Any
    wide: mdl.ModelConfig

    def __call__(self, stacked_params, positions):
        params, shifts = stacked_params

        def one(member_params, shift):
            mixture = mdl.apply(self.graphdef, member_params, positions)
            return sm.shift_floor(mixture, shift, config=self.wide)

        return ensemble.combine(jax.vmap(one)(params, shifts))  # members on axis 0


def _ensemble_model(fit) -> tuple[EnsembleForward, Any]:
    """The forward and its params `(params, floor shifts)`."""
    return EnsembleForward(fit.graphdef, fit.wide), (parallel.local(fit.params), fit.floor_shifts())


def component_count(fit) -> int:
    """Components of the ensemble's combined mixture: M x K (per_dim members: M x K^D)."""
    forward, params = _ensemble_model(fit)
    probe = jnp.zeros((1, fit.wide.in_features), jnp.float32)
    return mx.num_components(jax.eval_shape(forward, params, probe))


def render_values(fit, *, member: int | None = None, **options) -> np.ndarray:
    """`render.render_values` of the ensemble of `fit` (or of member `member` alone).

    `options`: `height`, `width` and any of `render.render_values`'s keywords; for the
    ensemble, `component` counts the combined mixture's components (member-major). A member
    that does not exist raises a one-line ValueError.
    """
    if member is not None:
        own = fit.member(member)
        return rd.render_values(own.graphdef, own.params, **options)
    forward, params = _ensemble_model(fit)
    settings = {**_DEFAULTS, **options}
    components = component_count(fit)
    return rd.forward_values(
        forward, params, in_features=fit.wide.in_features, components=components, **settings
    )


def render(fit, *, member: int | None = None, method: str = "mode", **options) -> np.ndarray:
    """An RGB-displayable render of the ensemble of `fit` (or of one member), as
    `render.render` shows a single model."""
    values = render_values(fit, member=member, method=method, **options)
    if member is not None:
        components = fit.model_configs[member].components
    else:
        components = component_count(fit)
    return rd.colour(values, method=method, components=components)


# `render.render_values`'s defaults, for the options a caller leaves out.
_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(rd.render_values).parameters.items()
    if parameter.default is not inspect.Parameter.empty
}
