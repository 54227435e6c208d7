"""Where arrays live: a data-parallel mesh over the devices of every process, and its shardings.

The mesh is `[processes, devices per process]` with axes `("process", "device")`: row p holds
devices of process p. With `jax.distributed.initialize()` the same code spans several hosts; XLA
inserts every collective (the gradient all-reduce), there is no communication code here.

`Placement` is the one object training asks where its arrays go; how it lays them out:

- params, optimiser state, step and shuffle key: replicated on every device;
- a batch `[B, ...]`: sharded over both axes, `B / (P * D)` rows per device;
- the training pairs: each process holds only its own share `[N_p, F]`, one copy on each of its
  devices. With one process that is `xs [N, F]` replicated; with P processes a global
  `[P, N_max, F]` sharded over "process" (shares padded to the longest, padding never indexed);
- batch indices: `[num_batches, B]` (one process) or `[num_batches, P, B / P]` (P processes),
  each into the share of the process that holds them, sharded like the batch, so every device
  gathers its rows from its own memory.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

PROCESS, DEVICE = "process", "device"
AXES = (PROCESS, DEVICE)


def data_mesh(devices: int | None = None) -> Mesh:
    """A `[processes, devices per process]` mesh over `devices` devices in all (None: every one).

    With several processes `devices` must divide evenly over them; each process contributes its
    first `devices / processes` local devices.
    """
    processes = jax.process_count()
    per_process = collections.Counter(d.process_index for d in jax.devices())
    available = min(per_process.values()) * processes
    if devices is None:
        devices = available
    if not isinstance(devices, int) or isinstance(devices, bool) or devices < 1:
        raise ValueError(f"devices must be a positive integer, got {devices!r}")
    if devices > available:
        raise ValueError(
            f"--devices {devices} asks for more devices than the {available} {describe_platform()} "
            f"device(s) JAX sees; use --devices {available} or less (on CPU, emulate more with "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={devices})"
        )
    if devices % processes:
        raise ValueError(
            f"--devices {devices} does not divide over {processes} processes; use a multiple of "
            f"{processes}"
        )
    grid = [
        [d for d in jax.devices() if d.process_index == p][: devices // processes]
        for p in range(processes)
    ]
    return Mesh(np.array(grid), AXES, axis_types=(AxisType.Auto,) * len(AXES))


def local_mesh(devices: int | None = None) -> Mesh:
    """A `[1, devices]` mesh over this process's first `devices` devices (None: all), for work
    one process does alone, such as rendering."""
    available = jax.local_device_count()
    devices = available if devices is None else devices
    if not isinstance(devices, int) or isinstance(devices, bool) or not 1 <= devices <= available:
        raise ValueError(
            f"devices must be an integer from 1 to the {available} local {describe_platform()} "
            f"device(s), got {devices!r}"
        )
    return Mesh(
        np.array([jax.local_devices()[:devices]]), AXES, axis_types=(AxisType.Auto,) * len(AXES)
    )


def describe_platform() -> str:
    return jax.devices()[0].platform


def describe(mesh: Mesh) -> str:
    """'1 cpu device', '4 gpu devices', '8 gpu devices (4 on each of 2 processes)'."""
    size, platform = mesh.devices.size, mesh.devices.flat[0].platform
    text = f"{size} {platform} device{'s' if size > 1 else ''}"
    processes = mesh.devices.shape[0]
    return text + (
        f" ({mesh.devices.shape[1]} on each of {processes} processes)" if processes > 1 else ""
    )


def check_batch_size(batch_size: int, count: int) -> None:
    """Refuse a global batch that does not split evenly over `count` devices, naming the nearest
    sizes that do (no silent rounding: the batch size is part of the run's settings)."""
    if batch_size % count:
        below, above = batch_size // count * count, -(-batch_size // count) * count
        nearest = f"--batch-size {below} or {above}" if below else f"--batch-size {above}"
        raise ValueError(
            f"batch size {batch_size} does not split evenly over {count} devices; use {nearest} "
            f"(a multiple of {count}) or other --devices"
        )


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """`[B, ...]` split over every device of the mesh along the batch axis."""
    return NamedSharding(mesh, PartitionSpec(AXES))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """A pytree of values that are equal on every process, as arrays replicated over `mesh`.

    Typed PRNG keys are placed through their key data. Works for one process or many
    (`jax.make_array_from_process_local_data` with the whole value as every process's part).
    """
    sharding = replicated(mesh)

    def place(leaf):
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            impl = jax.random.key_impl(leaf)
            return jax.random.wrap_key_data(place(jax.random.key_data(leaf)), impl=impl)
        return jax.make_array_from_process_local_data(sharding, np.asarray(leaf))

    return jax.tree_util.tree_map(place, tree)


def local(tree: Any) -> Any:
    """Arrays replicated over several devices as single-device arrays on this process's first
    device (no copy); every other leaf unchanged.

    For one process's host-side work (renders, metrics) on replicated params: a computation
    on replicated inputs would otherwise run on every device (repeating the work), or, with
    devices of other processes in the sharding, need every process to take part.
    """

    def first(leaf):
        if (
            isinstance(leaf, jax.Array)
            and len(leaf.sharding.device_set) > 1
            and leaf.is_fully_replicated
        ):
            return leaf.addressable_data(0)
        return leaf

    return jax.tree_util.tree_map(first, tree)


def is_main_process() -> bool:
    """True on the process that writes files (process 0)."""
    return jax.process_index() == 0


def process_share(num_samples: int) -> np.ndarray:
    """Row indices of `range(num_samples)` that this process trains on: every P-th, from its index.

    Strided, so every process sees every part of the data (e.g. every image), and shares differ
    in size by at most one row.
    """
    return np.arange(jax.process_index(), num_samples, jax.process_count())


def put_training_data(xs: np.ndarray, mesh: Mesh, *, max_rows: int) -> jax.Array:
    """This process's share `xs [N_p, F]` onto its devices (see the module docstring for the
    layout)."""
    if mesh.devices.shape[0] == 1:
        return jax.device_put(xs, replicated(mesh))
    padded = np.zeros((1, max_rows) + xs.shape[1:], xs.dtype)
    padded[0, : xs.shape[0]] = xs
    return jax.make_array_from_process_local_data(
        NamedSharding(mesh, PartitionSpec(PROCESS)),
        padded,
        (mesh.devices.shape[0],) + padded.shape[1:],
    )


def put_batch_indices(batch_indices: np.ndarray, mesh: Mesh) -> jax.Array:
    """This process's `[num_batches, B / P]` indices into its share, sharded like the batch."""
    if mesh.devices.shape[0] == 1:
        return jax.device_put(batch_indices, NamedSharding(mesh, PartitionSpec(None, AXES)))
    local_part = batch_indices[:, None, :]
    return jax.make_array_from_process_local_data(
        NamedSharding(mesh, PartitionSpec(None, PROCESS, DEVICE)),
        local_part,
        (local_part.shape[0], mesh.devices.shape[0], local_part.shape[2]),
    )


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where training's arrays live, built once per run: `mesh` None is one device (no mesh, no
    sharding annotation: exactly the single-device program), else the data-parallel mesh.

    Host side it places the state, data and batch indices and gathers host values from every
    process; inside compiled code it gathers and pins batches and pins the replicated outputs.
    Hashable, so compiled functions can close over it.
    """

    mesh: Mesh | None = None

    @classmethod
    def build(cls, devices: int | None = None, *, batch_size: int) -> Placement:
        """Over `devices` devices (None: all); refuses a batch that does not split over them."""
        mesh = data_mesh(devices)
        check_batch_size(batch_size, mesh.devices.size)
        return cls(mesh if mesh.devices.size > 1 else None)

    @property
    def devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.devices.size

    @property
    def processes(self) -> int:
        return 1 if self.mesh is None else self.mesh.devices.shape[0]

    def describe(self) -> str:
        return f"1 {describe_platform()} device" if self.mesh is None else describe(self.mesh)

    # Host side.

    def put_state(self, tree: Any) -> Any:
        """New arrays for `tree` (equal on every process): compiled epochs donate them, so the
        caller's stay valid."""
        if self.mesh is None:
            return jax.tree_util.tree_map(jnp.copy, tree)
        return replicate(tree, self.mesh)

    def put_data(self, rows: np.ndarray, *, max_rows: int) -> jax.Array:
        """This process's share `rows [N_p, F]` of the training pairs (see the module docstring)."""
        if self.mesh is None:
            return jax.device_put(rows)
        return put_training_data(rows, self.mesh, max_rows=max_rows)

    def put_batch_indices(self, batch_indices: np.ndarray):
        """This process's `[num_batches, B / P]` indices into its share."""
        if self.mesh is None:
            return batch_indices
        return put_batch_indices(batch_indices, self.mesh)

    def gather(self, values) -> np.ndarray:
        """This process's `values [...]` from every process, as `[P, ...]` on every process."""
        if self.processes == 1:
            return np.asarray(values)[None]
        return np.asarray(multihost_utils.process_allgather(np.asarray(values)))

    def normalisation(self, xs: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-feature `(mean, std)` of the inputs of every process, each holding its share
        `xs [N_p, in]` (std 1 where a feature is constant)."""
        xs = np.asarray(xs, np.float64)
        if self.processes == 1:
            mean, std = xs.mean(axis=0), xs.std(axis=0)
        else:
            moments = self.gather(
                np.concatenate([[xs.shape[0]], xs.mean(0), xs.var(0)]).astype(np.float32)
            ).astype(np.float64)  # [P, 1 + 2 * in]: count, means, variances
            counts, means, variances = np.split(moments, [1, 1 + xs.shape[1]], axis=1)
            mean = (counts * means).sum(0) / counts.sum()
            std = np.sqrt((counts * (variances + (means - mean) ** 2)).sum(0) / counts.sum())
        std = np.where(std > 0, std, 1.0)
        return tuple(mean.tolist()), tuple(std.tolist())

    def shuffle_key(self, key: jax.Array) -> jax.Array:
        """The key this process shuffles its own share with (`key` itself with one process)."""
        if self.processes == 1:
            return key
        return jax.random.fold_in(local(key), jax.process_index())

    # Inside compiled code.

    def take(self, data: jax.Array, indices: jax.Array) -> jax.Array:
        """The rows of one batch, `[B, F]`, sharded over the devices when there are several.

        One process: `data [N, F]`, `indices [B]`. P processes: each process's share
        `data [P, N_max, F]` and `indices [P, B / P]` into it, so every device gathers from the
        share it holds (no data crosses devices); the result is the processes' rows in order.
        """
        if indices.ndim == 1:
            batch = data[indices]
        else:
            batch = jax.vmap(lambda share, rows: share[rows])(data, indices).reshape(
                (-1,) + data.shape[2:]
            )
        return self.pin_batch(batch)

    def pin_batch(self, batch: jax.Array) -> jax.Array:
        if self.mesh is None:
            return batch
        return jax.lax.with_sharding_constraint(batch, batch_sharding(self.mesh))

    def pin_replicated(self, tree: Any) -> Any:
        """Outputs on every device, so the next epoch's (donated) inputs match them."""
        if self.mesh is None:
            return tree
        return jax.lax.with_sharding_constraint(tree, replicated(self.mesh))
