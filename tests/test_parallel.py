"""Several devices and processes (mdn_jax.parallel) and mixed precision.

The pytest process has started JAX with one CPU device, so the multi-device checks run in one
subprocess with four emulated devices (`XLA_FLAGS=--xla_force_host_platform_device_count=4`):
this file run as a script performs them all and prints one JSON line, paying JAX's start-up
once. The two-process check runs `examples/multihost_loopback.py`.
"""

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdn_jax import model, parallel, train

ROOT = Path(__file__).resolve().parents[1]
DEVICES = 4


def _toy(n, seed=0):
    """y = (sin 3 x1, cos 2 x2) + N(0, 0.1^2) noise: the NLL optimum is about -1.77 nats."""
    rng = np.random.default_rng(seed)
    xs = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    ys = np.concatenate([np.sin(3 * xs[:, :1]), np.cos(2 * xs[:, 1:])], axis=1)
    return xs, (ys + 0.1 * rng.normal(size=ys.shape)).astype(np.float32)


def _max_difference(a, b) -> float:
    return max(
        float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )


# ---------------------------------------------------------------------------------------------
# The subprocess: every check that needs several devices.


def _epoch_checks() -> dict:
    """One scanned epoch, same global batches and order: 1 device vs 4; and what XLA inserted."""
    xs, ys = _toy(300)
    config = model.ModelConfig(hidden=(16, 16), components=3, out_features=2)
    graphdef, params = model.init(config, key=jax.random.key(0))
    optimizer = train.make_optimizer(train.TrainConfig(clip_norm=1.0), total_steps=100)
    batches = train.shuffled_batches(jax.random.key(1), xs.shape[0], 64)  # 300 = 4 * 64 + 44: wraps

    single = train.Trainer(graphdef, optimizer)
    one, one_losses = single.epoch(
        single.init(params, key=jax.random.key(2)), jnp.asarray(xs), jnp.asarray(ys), batches
    )
    mesh = parallel.data_mesh(DEVICES)
    sharded = train.Trainer(graphdef, optimizer, mesh=mesh)
    data = [parallel.put_training_data(a, mesh, max_rows=a.shape[0]) for a in (xs, ys)]
    indices = parallel.put_batch_indices(batches, mesh)
    state = sharded.init(params, key=jax.random.key(2))
    hlo = sharded.lower_epoch(state, *data, indices).compile().as_text()
    many, many_losses = sharded.epoch(state, *data, indices)
    return {
        "epoch_params": _max_difference(one.params, many.params),
        "epoch_opt_state": _max_difference(one.opt_state, many.opt_state),
        "epoch_losses": _max_difference(one_losses, many_losses),
        "epoch_steps": [int(one.step), int(many.step)],
        "params_replicated": all(
            leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == DEVICES
            for leaf in jax.tree_util.tree_leaves((many.params, many.opt_state))
        ),
        "batch_sharded": indices.sharding.spec == jax.sharding.PartitionSpec(None, parallel.AXES),
        "all_reduces": hlo.count("all-reduce("),
        "all_gathers": hlo.count("all-gather("),  # none: every device gathers its rows locally
    }


def _fit_checks() -> dict:
    """fit on 4 devices trains the model fit on 1 trains (one host: the same shuffle)."""
    xs, ys = _toy(256)
    kwargs = dict(
        model_config=model.ModelConfig(in_features=2, out_features=2, hidden=(8,), components=2),
        train_config=train.TrainConfig(epochs=2, batch_size=32, seed=3),
    )
    one, many = train.fit(xs, ys, devices=1, **kwargs), train.fit(xs, ys, devices=DEVICES, **kwargs)
    try:
        train.fit(
            xs,
            ys,
            model_config=kwargs["model_config"],
            train_config=train.TrainConfig(epochs=1, batch_size=30),
            devices=DEVICES,
        )
        refusal = None
    except ValueError as error:
        refusal = str(error)
    return {
        "fit_params": _max_difference(one.params, many.params),
        "fit_losses": [[h["loss"] for h in one.history], [h["loss"] for h in many.history]],
        "fit_refusal": refusal,
    }


def _render_checks() -> dict:
    """A render split over 4 (and 3) devices against the one-device render: whether they are
    equal bit for bit, and how far apart they are in float32 ulps (units in the last place) of
    max(1, |value|).

    'sample' covers the per-pixel random keys, 'mode' the other methods' path.
    """
    from mdn_jax import data, render

    config = model.ModelConfig(
        hidden=(16, 16),
        components=3,
        input_offset=data.IMAGE_INPUT_OFFSET,
        input_scale=data.IMAGE_INPUT_SCALE,
    )
    graphdef, params = model.init(config, key=jax.random.key(0))
    equal, ulps, unequal = {}, {}, {}
    for method, devices, coherent in (
        ("sample", DEVICES, False),
        ("sample", DEVICES, True),  # one draw shared by every pixel of every device's tiles
        ("mode", 3, False),
    ):  # 3: chunks rounded up to 3 x 4096 pixels
        options = dict(height=97, width=131, method=method, key=jax.random.key(5), num_samples=2)
        options |= dict(coherent=True) if coherent else {}
        one = render.render_values(graphdef, params, devices=1, **options)
        many = render.render_values(
            graphdef, params, devices=devices, pixels_per_chunk=8192, **options
        )
        name = f"{'coherent' if coherent else method}_{devices}"
        equal[name] = bool(one.shape == many.shape and np.array_equal(one, many))
        if one.shape == many.shape:
            # ulps of the larger magnitude, at least 1.0 (colours: one ulp of 1.0 is 1.2e-7)
            spacing = np.spacing(np.maximum(1.0, np.maximum(np.abs(one), np.abs(many))))
            ulps[name] = float(np.max(np.abs(one - many) / spacing))
            unequal[name] = float(np.mean(one != many))
    return {"render_equal": equal, "render_ulps": ulps, "render_unequal": unequal}


def _cli_checks(folder: Path) -> dict:
    """`mdn-jax train --devices 4`, and a batch that does not split over them."""
    import imageio.v3 as iio

    from mdn_jax import checkpoint, cli

    rng = np.random.default_rng(0)
    images = []
    for i in range(2):
        images.append(folder / f"{i}.png")
        iio.imwrite(images[-1], rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8))
    tiny = [
        "--encoding",  # the reference settings, the default before the hash grid
        "identity",
        "--hidden",
        "8,8",
        "--components",
        "2",
        "--frame-every",
        "1",
        "--no-progress",
        "--out",
        folder / "run",
    ]

    def run(*args):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main([str(a) for a in (*args, *tiny)])
        return code, out.getvalue(), err.getvalue()

    trained = run(
        "train", *images, "--epochs", "2", "--batch-size", "32", "--devices", str(DEVICES)
    )
    refused = run(
        "train",
        *images,
        "--epochs",
        "3",
        "--batch-size",
        "30",
        "--devices",
        str(DEVICES),
        "--resume",
    )
    metrics = json.loads((folder / "run" / "metrics.json").read_text())
    return {
        "cli_trained": trained,
        "cli_refused": refused,
        "cli_metrics_devices": metrics["devices"],
        "cli_epoch": checkpoint.latest_epoch(folder / "run" / "checkpoint"),
    }


def _multi_device_checks(folder: Path) -> dict:
    assert jax.device_count() == DEVICES, jax.devices()
    return {**_epoch_checks(), **_fit_checks(), **_render_checks(), **_cli_checks(folder)}


@pytest.fixture(scope="module")
def multi_device(tmp_path_factory):
    """The results of `_multi_device_checks`, run once in a subprocess with 4 CPU devices."""
    folder = tmp_path_factory.mktemp("devices")
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES}",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    done = subprocess.run(
        [sys.executable, __file__, str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_one_epoch_on_four_devices_equals_one_device(multi_device):
    """Same global batches in the same order (the last one wrapped): same params, within float32."""
    assert multi_device["epoch_steps"] == [5, 5]
    assert multi_device["epoch_params"] < 1e-5
    assert multi_device["epoch_opt_state"] < 1e-6
    assert multi_device["epoch_losses"] < 1e-5
    assert multi_device["params_replicated"]
    assert multi_device[
        "batch_sharded"
    ]  # batch indices [num_batches, B]: B split over every device
    # XLA inserted the gradient all-reduce, and no device fetched training data from another.
    assert multi_device["all_reduces"] >= 1 and multi_device["all_gathers"] == 0


def test_fit_on_four_devices_trains_the_one_device_model(multi_device):
    assert multi_device["fit_params"] < 1e-5
    np.testing.assert_allclose(*multi_device["fit_losses"], rtol=1e-5)


def test_batch_that_does_not_split_over_the_devices_is_refused(multi_device):
    assert multi_device["fit_refusal"] == (
        "batch size 30 does not split evenly over 4 devices; use --batch-size 28 "
        "or 32 (a multiple of 4) or other --devices"
    )
    with pytest.raises(ValueError, match=r"batch size 3 .* 4 devices; use --batch-size 4 \("):
        parallel.check_batch_size(3, 4)
    parallel.check_batch_size(200, 8)


def test_sharded_render_equals_the_one_device_render(multi_device):
    """'mode' (and every method without random draws) is bit-identical on any x86-64 CPU.
    'sample' is within 1 float32 ulp of max(1, |value|), 1.2e-7 for colours: on Intel Xeons
    XLA:CPU compiles the sharded program's draw `loc + scale * noise` differently from the
    one-device program (fused multiply-adds and vector loops fall differently), and about 1
    value in 6,000 rounds the other way (13 of 76,242 here); on AMD EPYC all are equal.
    README: Several devices and hosts."""
    assert multi_device["render_equal"]["mode_3"]
    assert multi_device["render_ulps"]["mode_3"] == 0.0
    assert multi_device["render_ulps"]["sample_4"] <= 1.0
    assert multi_device["render_unequal"]["sample_4"] < 1e-3
    assert multi_device["render_ulps"]["coherent_4"] <= 1.0  # the same draw arithmetic
    assert multi_device["render_unequal"]["coherent_4"] < 1e-3


def test_cli_train_on_four_devices_says_so(multi_device):
    code, out, err = multi_device["cli_trained"]
    assert code == 0, err
    assert "on 4 cpu devices" in out.splitlines()[0]  # the banner
    assert "samples/s on 4 devices" in out
    assert multi_device["cli_epoch"] == 2 and multi_device["cli_metrics_devices"] == 4
    code, _, err = multi_device["cli_refused"]
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("mdn-jax: error: batch size 30") and "28 or 32" in lines[0]


def test_more_devices_than_there_are_is_refused_naming_the_flag_to_emulate_them():
    with pytest.raises(
        ValueError, match=r"--devices 2 .* 1 cpu device.*xla_force_host_platform_device_count=2"
    ):
        parallel.data_mesh(2)
    assert parallel.data_mesh().devices.shape == (1, 1)
    assert parallel.describe(parallel.data_mesh()) == "1 cpu device"


def test_two_processes_over_loopback_end_with_identical_params(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "multihost_loopback.py"),
            "--out",
            str(tmp_path),
            "--epochs",
            "1",
            "--timeout",
            "400",
        ],
        capture_output=True,
        text=True,
        timeout=450,
    )
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert (
        results["ok"]
        and results["processes_agree"]
        and results["devices_agree"]
        and results["checkpoint_agrees"]
    )
    # ...and they are what one device trains from the batches the two shares formed together
    # (0.009 when, say, both processes trained on the same share).
    assert results["difference_from_one_device"] < 1e-5
    assert (
        results["devices"] == 4 and results["epochs"] == [2, 2] and results["checkpoint_epoch"] == 2
    )
    assert results["frames"] == 2 and results["metrics"] and results["stray_files"] == []


# ---------------------------------------------------------------------------------------------
# Mixed precision (one device is enough).


def test_bfloat16_trains_finite_and_close_to_float32():
    """Trunk products in bfloat16, everything else float32; final NLL within 5% of float32."""
    xs, ys = _toy(1024)
    nll, results = {}, {}
    for dtype in model.DTYPES:
        config = model.ModelConfig(
            in_features=2, out_features=2, hidden=(32, 32), components=2, dtype=dtype
        )
        result = train.fit(
            xs,
            ys,
            model_config=config,
            train_config=train.TrainConfig(
                epochs=30, batch_size=64, learning_rate=1e-2, schedule="cosine"
            ),
        )
        assert all(np.isfinite(h["loss"]) and "skipped_steps" not in h for h in result.history), (
            dtype
        )
        nll[dtype], results[dtype] = (
            train.evaluate_nll(result.graphdef, result.params, xs, ys),
            result,
        )
    assert np.isfinite(nll["bfloat16"]) and nll["float32"] < -1.5, (
        nll
    )  # both near the -1.77 optimum
    assert abs(nll["bfloat16"] - nll["float32"]) <= 0.05 * abs(nll["float32"]), nll
    state = results["bfloat16"].state
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves((state.params, state.opt_state))} <= {
        jnp.dtype(jnp.float32),
        jnp.dtype(jnp.int32),
    }


def test_bfloat16_casts_only_the_trunk_products():
    config = model.ModelConfig(hidden=(8, 8), components=2, dtype="bfloat16")
    graphdef, params = model.init(config, key=jax.random.key(0))
    jaxpr = jax.make_jaxpr(lambda p, x: model.apply(graphdef, p, x))(params, jnp.zeros((4, 2)))
    products = [
        eqn.outvars[0].aval.dtype for eqn in jaxpr.eqns if eqn.primitive.name == "dot_general"
    ]
    assert products == [jnp.bfloat16, jnp.bfloat16, jnp.float32]  # two trunk layers, then the head
    mixture = model.apply(graphdef, params, jnp.zeros((4, 2)))
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves((params, mixture))} == {
        jnp.dtype(jnp.float32)
    }
    assert model.ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="dtype must be one of float32, bfloat16"):
        model.ModelConfig(dtype="float16")


if __name__ == "__main__":
    print(json.dumps(_multi_device_checks(Path(sys.argv[1]))))
