"""The members of a stacked fit (`mdn_jax.stacked`): which settings may differ, and how members
of different widths share one padded set of params.

Members must build the same compiled program: they may differ only in `PER_MEMBER_MODEL` and
`PER_MEMBER_TRAIN` (widths at the same depth, scale floor, initial means, seed, learning rate).

Different widths: every member's params are zero-padded to the widest member's shapes (the
elementwise maximum of the hidden widths). A padded unit has zero weights in and out and a zero
bias, so whatever its activation outputs (softplus(0) is not 0) meets zero weights in the next
layer and contributes exactly nothing; `mask` (1 on a member's own entries, 0 on padding) zeroes
the padded entries' gradients before the optimiser, so Adam's moments there stay 0 and the
padding never moves. `unpad` slices a member back to its own shapes.

Per-member values that do not change shapes travel as arrays with a leading `[M]` axis
(`Settings`), so one compiled epoch serves every member: a per-member dropout rate, say, is one
more field there. What every member shares is found on the host (`Shared`) and left out of the
compiled epoch: without padding there is no mask, with one floor no floor shift, with one rate
it is built into the shared optimiser, so a stack of one member runs exactly `fit`'s program.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from mdn_jax import model as mdl
from mdn_jax import structures
from mdn_jax.config import TrainConfig

PER_MEMBER_MODEL = ("hidden", "scale_floor", "mean_init", "head_init_scale", "dropout")
PER_MEMBER_TRAIN = ("learning_rate", "seed")


class Settings(NamedTuple):
    """Per-member values of the compiled epoch, each with a leading `[M]` axis.

    floor_shift: `[M]` the member's scale floor minus the stacked model's (`wide.scale_floor`).
    learning_rate: `[M]` Adam's peak rate (the shared optimiser is built with rate 1).
    mask: `[M, P]` 1 on the member's own flat params, 0 on padding.
    dropout: `[M]` the member's dropout rate (used where members' rates differ; see `Shared`).
    """

    floor_shift: jax.Array
    learning_rate: jax.Array
    mask: jax.Array
    dropout: jax.Array | None = None


class Shared(NamedTuple):
    """What all members share, found on the host (`shared`); static in the compiled epoch.

    widths: every member has the padded widths (no padding, so no gradient mask). floor: every
    member has the padded model's scale floor (no floor shift). learning_rate: the common peak
    rate, built into the shared optimiser (no traced per-member rate), or None if rates differ.
    dropout: every member has the padded model's dropout rate (static, as in `fit`), else each
    member's own rate is traced.
    """

    widths: bool = False
    floor: bool = False
    learning_rate: float | None = None
    dropout: bool = False


NOTHING_SHARED = Shared()  # the general case: mask, floor shift and traced rate all applied


def shared(model_configs, train_configs, wide: mdl.ModelConfig) -> Shared:
    """The `Shared` of these members (padded to `wide`)."""
    rates = {float(c.learning_rate) for c in train_configs}
    return Shared(
        widths=all(tuple(c.hidden) == tuple(wide.hidden) for c in model_configs),
        floor=all(c.scale_floor == wide.scale_floor for c in model_configs),
        learning_rate=rates.pop() if len(rates) == 1 else None,
        dropout=all(c.dropout == wide.dropout for c in model_configs),
    )


def check_members(
    model_configs: Sequence[mdl.ModelConfig], train_configs: Sequence[TrainConfig]
) -> None:
    """Refuse members that cannot share one compiled program, naming the setting."""
    if not model_configs:
        raise ValueError("stacked training needs at least one member; pass model_configs=[...]")
    if len(train_configs) != len(model_configs):
        raise ValueError(
            f"{len(model_configs)} model configs but {len(train_configs)} train configs; pass "
            "one train config per member or a single one for all"
        )
    for kind, configs, free in (
        ("model", model_configs, PER_MEMBER_MODEL),
        ("train", train_configs, PER_MEMBER_TRAIN),
    ):
        first = configs[0]
        for m, config in enumerate(configs[1:], 1):
            for field in dataclasses.fields(first):
                a, b = getattr(first, field.name), getattr(config, field.name)
                if field.name not in free and a != b:
                    raise ValueError(
                        f"members 0 and {m} differ in {kind} setting {field.name} ({a!r} and "
                        f"{b!r}); stacked members may differ only in {', '.join(free)}: train "
                        "the others in a separate call"
                    )
    for m, config in enumerate(model_configs[1:], 1):
        depth, first_depth = len(config.hidden), len(model_configs[0].hidden)
        if depth != first_depth:
            raise ValueError(
                f"member {m} has {depth} hidden layers and member 0 has {first_depth}; stacked "
                "members need the same depth (widths may differ)"
            )


def wide_config(model_configs: Sequence[mdl.ModelConfig]) -> mdl.ModelConfig:
    """The model every member is padded to: the widest width of each layer, member 0's floor,
    the highest dropout rate (so the compiled epoch has dropout wherever any member does)."""
    widths = tuple(max(layer) for layer in zip(*(c.hidden for c in model_configs)))
    dropout = max(c.dropout for c in model_configs)
    return dataclasses.replace(
        model_configs[0], hidden=widths, mean_init=None, head_init_scale=1.0, dropout=dropout
    )


def shapes_of(config: mdl.ModelConfig):
    """`(graphdef, params of ShapeDtypeStructs)` of a model, without initialising it."""
    return jax.eval_shape(lambda key: mdl.init(config, key=key), jax.random.key(0))


def _corner(shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(0, size) for size in shape)


def pad(params, wide) -> tuple[Any, Any]:
    """`(params padded with zeros to wide's shapes, mask of 1s on params' own entries)`, numpy."""

    def grow(leaf, target, fill):
        out = np.zeros(target.shape, target.dtype)
        out[_corner(np.shape(leaf))] = fill(leaf)
        return out

    padded = jax.tree.map(lambda a, w: grow(a, w, np.asarray), params, wide)
    mask = jax.tree.map(lambda a, w: grow(a, w, lambda x: 1), params, wide)
    return padded, mask


def unpad(padded, own) -> Any:
    """A member's params sliced from the padded `padded` to its own shapes `own`."""
    return jax.tree.map(lambda a, o: a[_corner(o.shape)], padded, own)


def unpad_flat(opt_state, wide_params, own_params, *, flat_size: int) -> Any:
    """An optimiser state of the padded flat params `[P_wide]` as one of the member's own flat
    params: every `[P_wide]` leaf (Adam's moments) unravelled, sliced and ravelled again."""
    _, unravel = ravel_pytree(jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), wide_params))

    def convert(leaf):
        if np.shape(leaf) != (flat_size,):
            return leaf
        return ravel_pytree(unpad(unravel(leaf), own_params))[0]

    return jax.tree.map(convert, opt_state)


def member_optimizer(
    base: optax.GradientTransformation, settings: Settings, *, shared: Shared = NOTHING_SHARED
) -> optax.GradientTransformation:
    """The member's optimiser: padding's gradients masked out, `base` (built with learning rate
    1; every schedule is linear in its peak rate), then the member's rate. What `shared` says
    all members share is an identity instead (same optimiser state: each link's is empty)."""

    def masked(updates, params):
        # Raveled, so the mask `[P]` fits the flat params `mdn_jax.step` optimises today and
        # also a params pytree, should the step ever optimise one.
        flat, unravel = ravel_pytree(updates)
        return unravel(flat * settings.mask)

    return optax.chain(
        optax.identity() if shared.widths else optax.stateless(masked),
        base,
        optax.identity()
        if shared.learning_rate is not None
        else optax.scale(settings.learning_rate),
    )


def base_train_config(train_config: TrainConfig, *, shared: Shared = NOTHING_SHARED) -> TrainConfig:
    """The shared optimiser's config: the member's own with peak rate 1, or with the common
    rate when all members share one (`shared.learning_rate`)."""
    rate = 1.0 if shared.learning_rate is None else shared.learning_rate
    return dataclasses.replace(train_config, learning_rate=rate)


def shift_floor(mixture, shift: jax.Array, *, config: mdl.ModelConfig):
    """`mixture` (built with `config.scale_floor`) with every floored scale raised by `shift`.

    Which entries the head floors comes from the structure's own `head_to_mixture`: its
    derivative in the floor is 1 exactly on those and 0 elsewhere, so other entries get `+ 0`.
    """
    structure = structures.named(config.structure)
    options = dict(components=config.components, out_features=config.out_features)
    raw = jnp.zeros((structure.head_size(**options),), jnp.float32)

    def head(floor):
        return structure.head_to_mixture(
            raw, scale_floor=floor, mean_activation=config.mean_activation, **options
        )

    one = jnp.ones((), jnp.float32)
    _, tangent = jax.jvp(head, (one * config.scale_floor,), (one,))
    return jax.tree.map(lambda value, t: value + shift * t, mixture, tangent)


def _stack(trees):
    return jax.tree.map(lambda *leaves: np.stack([np.asarray(leaf) for leaf in leaves]), *trees)


def initial(
    model_configs, train_configs, wide, base, *, shared: Shared = NOTHING_SHARED
) -> tuple[Any, Settings]:
    """The stacked fresh `step.TrainState` (each member initialised from its own seed exactly as
    `train.fit` does, then padded) and the members' `Settings`, as host arrays."""
    from mdn_jax import step  # step imports mixture code this module does not need at import

    _, wide_shapes = shapes_of(wide)
    states, settings, keys = [], [], []
    for config, train_config in zip(model_configs, train_configs, strict=True):
        init_key, shuffle_key = jax.random.split(jax.random.key(train_config.seed))
        _, params = mdl.init(config, key=init_key)
        padded, mask = pad(params, wide_shapes)
        member = Settings(
            np.float32(config.scale_floor - wide.scale_floor),
            np.float32(train_config.learning_rate),
            np.asarray(ravel_pytree(mask)[0], np.float32),
            np.float32(config.dropout),
        )
        optimizer = member_optimizer(base, member, shared=shared)
        states.append(step.init_state(padded, optimizer, key=shuffle_key)._replace(key=None))
        settings.append(member)
        keys.append(np.asarray(jax.random.key_data(shuffle_key)))
    state = _stack(states)._replace(key=jax.random.wrap_key_data(np.stack(keys)))
    return state, Settings(*(np.stack(values) for values in zip(*settings)))


# Each member's epoch keys, as `fit` splits its key: `(state keys [M], shuffle key bits [M, k])`.
_split_keys = jax.jit(
    lambda keys: (lambda pairs: (pairs[:, 0], jax.random.key_data(pairs[:, 1])))(
        jax.vmap(jax.random.split)(keys)
    )
)


def member_batches(bits: np.ndarray, num_samples: int, batch_size: int) -> np.ndarray:
    """`[M, ceil(N / B), B]` every member's shuffle from its shuffle key's bits `[M, k]`: the
    same draw as `mdn_jax.step.shuffled_batches` of that key (the key bits fetched once)."""
    num_batches = -(-num_samples // batch_size)  # step.steps_per_epoch, without importing step
    out = np.empty((bits.shape[0], num_batches * batch_size), np.int32)
    for row, seed in zip(out, bits.astype(np.uint32).reshape(bits.shape[0], -1)):
        row[:] = np.resize(np.random.default_rng(seed).permutation(num_samples), row.shape)
    return out.reshape(bits.shape[0], num_batches, batch_size)


class Shuffles:
    """Each epoch's member keys and shuffles, one epoch ahead: the next epoch's keys are split
    before this epoch is dispatched (on CPU a dispatch waits for the running epoch), and its
    shuffles are drawn on the host while this epoch runs (`draw`)."""

    def __init__(self, key: jax.Array, num_samples: int, batch_size: int):
        self.shape = (num_samples, batch_size)
        self.keys, bits = _split_keys(key)
        self.batches = member_batches(np.asarray(bits), *self.shape)
        self.next = None

    def take(self) -> tuple[jax.Array, np.ndarray]:
        """This epoch's `(state keys [M], batches)`; splits the next epoch's keys."""
        keys, batches = self.keys, self.batches
        self.keys, self.next = _split_keys(keys)
        return keys, batches

    def draw(self) -> None:
        """The next epoch's shuffles (host work, to overlap the running epoch)."""
        self.batches = member_batches(np.asarray(self.next), *self.shape)
