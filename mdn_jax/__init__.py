"""mdn_jax: Mixture Density Networks in JAX.

The public API, re-exported from its modules: mixture math (`mdn_jax.mixture`), the configs
(`mdn_jax.config`), marginals and calibration (`mdn_jax.marginals`, `mdn_jax.calibration`),
distrax, numpyro and TFP bridges (`mdn_jax.bridges`), the network (`mdn_jax.model`), training
(`mdn_jax.train`) and data (`mdn_jax.data`).
"""

from mdn_jax._version import version as _installed_version
from mdn_jax.bridges import to_distrax, to_numpyro, to_tfp
from mdn_jax.calibration import calibration_metrics, coverage, crps, pit
from mdn_jax.coherent import coherent_sample
from mdn_jax.config import ModelConfig, TrainConfig
from mdn_jax.data import DataError, demo_images, image_pairs, load_images, pixel_grid
from mdn_jax.discretised import bits_per_channel, discretised_log_prob
from mdn_jax.ensemble import combine as combine_members
from mdn_jax.marginals import cdf, quantile
from mdn_jax.mixture import (
    FullMixture,
    JointMixture,
    Mixture,
    PerDimMixture,
    batch_shape,
    component_log_probs,
    component_means,
    component_variances,
    entropy_of_weights,
    event_size,
    full,
    joint,
    log_prob,
    log_weights,
    mean,
    most_probable_component,
    most_probable_mean,
    nll,
    num_components,
    per_dim,
    responsibilities,
    sample,
    select_component,
    structure,
    variance,
)
from mdn_jax.model import MDN, MDNHead, apply, head_to_mixture
from mdn_jax.model import init as init_model
from mdn_jax.stacked import StackedFit, fit_stacked
from mdn_jax.train import FitResult, Trainer, TrainState, evaluate_nll, fit

__version__ = _installed_version()

__all__ = [
    # mixture
    "Mixture",
    "JointMixture",
    "PerDimMixture",
    "FullMixture",
    "joint",
    "per_dim",
    "full",
    "log_prob",
    "nll",
    "sample",
    "coherent_sample",
    "mean",
    "variance",
    "most_probable_mean",
    "most_probable_component",
    "select_component",
    "component_means",
    "component_variances",
    "component_log_probs",
    "log_weights",
    "responsibilities",
    "entropy_of_weights",
    "structure",
    "num_components",
    "event_size",
    "batch_shape",
    # ensembles
    "combine_members",
    # marginals and calibration
    "cdf",
    "quantile",
    "crps",
    "pit",
    "coverage",
    "calibration_metrics",
    # bridges
    "to_distrax",
    "to_numpyro",
    "to_tfp",
    # discretised
    "discretised_log_prob",
    "bits_per_channel",
    # model
    "ModelConfig",
    "MDN",
    "MDNHead",
    "init_model",
    "apply",
    "head_to_mixture",
    # train
    "TrainConfig",
    "TrainState",
    "Trainer",
    "FitResult",
    "fit",
    "evaluate_nll",
    "fit_stacked",
    "StackedFit",
    # data
    "DataError",
    "demo_images",
    "image_pairs",
    "load_images",
    "pixel_grid",
]
