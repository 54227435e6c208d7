"""The hash-grid encoding wired into the model, its config and the CLI (issue 13).

Old configs (no `encoding` key) load as they always behaved; a hash-grid model trains, composes
with jit/vmap/grad, renders between training pixels by interpolation, and resumes with its grid.
"""

import contextlib
import io
import json

import imageio.v3 as iio
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mdn_jax import cli, data, encoding, hashgrid, repeat, runs, train
from mdn_jax import model as mdl
from mdn_jax.config import ModelConfig

SMALL = dict(
    hidden=(16,),
    components=2,
    encoding="hashgrid",
    hashgrid_levels=4,
    hashgrid_features=2,
    hashgrid_log2_table=8,
    hashgrid_min_res=4,
    hashgrid_max_res=32,
)


def _main(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as exit:
            code = exit.code
    return code, out.getvalue(), err.getvalue()


# --- config ------------------------------------------------------------------------------------


def test_old_style_config_json_round_trips_and_keeps_its_encoding():
    # config.json as written before `encoding` existed: Fourier features on, no encoding keys.
    old = {"in_features": 2, "out_features": 3, "hidden": [8], "fourier_features": 16}
    config = ModelConfig.from_dict(json.loads(json.dumps(old)))
    assert config.encoding == "fourier"
    again = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    _, params = mdl.init(config, key=jax.random.key(0))
    assert "encoding" not in params  # Fourier holds no params: old checkpoints restore as before
    assert params["trunk"][0]["kernel"].shape == (32, 8)
    plain = ModelConfig.from_dict({"in_features": 2, "hidden": [8]})
    assert plain.encoding == "identity"
    assert ModelConfig.from_dict(json.loads(json.dumps(plain.to_dict()))) == plain


@pytest.mark.parametrize(
    "values, words",
    [
        (dict(encoding="fourier"), ("fourier_features > 0",)),
        (dict(encoding="hashgrid", fourier_features=4), ("fourier_features to 0",)),
        (dict(encoding="radial"), ("encoding must be one of", "hashgrid")),
        (dict(encoding="hashgrid", hashgrid_levels=0), ("hashgrid_levels", "positive")),
        (dict(encoding="hashgrid", hashgrid_min_res=64, hashgrid_max_res=8), ("finest",)),
        (dict(encoding="hashgrid", hashgrid_log2_table=30), ("log2_table_size",)),
        (dict(encoding="hashgrid", hashgrid_low=(0.0, 0.0), hashgrid_high=(1.0, 0.0)), ("below",)),
        (dict(encoding="hashgrid", hashgrid_low=(0.0,)), ("hashgrid_low needs 2",)),
    ],
)
def test_bad_hashgrid_settings_are_one_line_errors(values, words):
    with pytest.raises(ValueError) as error:
        ModelConfig(**values)
    message = str(error.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_image_config_spans_the_unit_square():
    config = runs.image_model_config(**SMALL)
    assert config.hashgrid_low == (-1.0, -1.0) and config.hashgrid_high == (1.0, 1.0)
    assert runs.image_model_config().hashgrid_low is None  # other encodings store no box


# --- the module --------------------------------------------------------------------------------


def test_same_seed_same_table_and_the_table_is_the_grid():
    config = runs.image_model_config(**SMALL)
    _, a = mdl.init(config, key=jax.random.key(3))
    _, b = mdl.init(config, key=jax.random.key(3))
    _, c = mdl.init(config, key=jax.random.key(4))
    assert a["encoding"]["table"].shape == (4, 256, 2)
    np.testing.assert_array_equal(a["encoding"]["table"][...], b["encoding"]["table"][...])
    assert not np.array_equal(a["encoding"]["table"][...], c["encoding"]["table"][...])


def test_encoding_is_the_hashgrid_of_the_unit_position_float64_reference():
    config = runs.image_model_config(**SMALL)
    module = encoding.HashGrid(config, rngs=nnx.Rngs(0))
    module.table[...] = jax.random.normal(jax.random.key(1), module.table.shape)
    unit = np.random.default_rng(0).uniform(size=(50, 2))
    normalised = (unit - 0.5) / 0.5  # the image normalisation of positions in the unit square
    got = module(jnp.asarray(normalised, jnp.float32))
    grid = encoding.hashgrid_config(config)
    rows, weights = hashgrid.corner_indices_and_weights(jnp.asarray(unit), config=grid)
    flat = np.asarray(module.table[...], np.float64).reshape(-1, 2)
    expected = np.einsum("nlc,nlcf->nlf", np.asarray(weights, np.float64), flat[np.asarray(rows)])
    np.testing.assert_allclose(got, expected.reshape(50, -1), atol=1e-5)


def test_apply_composes_with_jit_vmap_and_grad_and_grad_reaches_the_table():
    config = runs.image_model_config(**SMALL)
    graphdef, params = mdl.init(config, key=jax.random.key(0))
    x = jnp.asarray(data.pixel_grid(4, 4))
    y = jnp.full((16, 3), 0.5)

    def loss(p):
        return jnp.mean(mdl.mx.nll(mdl.apply(graphdef, p, x), y))

    eager = mdl.apply(graphdef, params, x)
    jitted = jax.jit(mdl.apply, static_argnums=0)(graphdef, params, x)
    mapped = jax.vmap(lambda row: mdl.apply(graphdef, params, row))(x)
    for other in (jitted, mapped):
        for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(other)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    grads = jax.jit(jax.grad(loss))(params)
    table_grad = np.asarray(grads["encoding"]["table"][...])
    assert np.all(np.isfinite(table_grad)) and np.abs(table_grad).max() > 0


def test_hashgrid_model_trains_on_a_tiny_image():
    image = np.random.default_rng(0).uniform(size=(1, 8, 8, 3)).astype(np.float32)
    xs, ys = data.image_pairs(image)
    result = train.fit(
        xs,
        ys,
        model_config=runs.image_model_config(**SMALL),
        train_config=train.TrainConfig(epochs=20, batch_size=16, learning_rate=1e-2, seed=0),
    )
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0] - 0.5, losses
    # The table was trained: it started uniform in [-1e-4, 1e-4] (hashgrid's init_scale).
    assert np.abs(np.asarray(result.params["encoding"]["table"][...])).max() > 1e-3


# --- the CLI -----------------------------------------------------------------------------------

FLAGS = [
    "--encoding",
    "hashgrid",
    "--hashgrid-levels",
    "4",
    "--hashgrid-features",
    "2",
    "--hashgrid-log2-table",
    "8",
    "--hashgrid-min-res",
    "4",
    "--hashgrid-max-res",
    "32",
    "--hidden",
    "16",
    "--components",
    "2",
    "--batch-size",
    "16",
    "--lr",
    "0.01",
    "--frame-every",
    "100",
    "--no-progress",
]


@pytest.fixture(scope="module")
def hashgrid_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hashgrid")
    pixels = np.random.default_rng(0).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    iio.imwrite(root / "a.png", pixels)
    code, _, err = _main("train", root / "a.png", "--epochs", "10", *FLAGS, "--out", root / "run")
    assert code == 0, err
    return root


def test_cli_stores_the_encoding_and_repeat_repeats_it(hashgrid_run):
    config = json.loads((hashgrid_run / "run" / "config.json").read_text())
    model = config["model"]
    assert model["encoding"] == "hashgrid" and model["hashgrid_levels"] == 4
    assert model["hashgrid_max_res"] == 32 and model["hashgrid_low"] == [-1.0, -1.0]
    flags = repeat.config_flags(config)
    for flag, value in (("--encoding", "hashgrid"), ("--hashgrid-log2-table", "8")):
        assert flags[flags.index(flag) + 1] == value


def test_render_at_4x_interpolates_between_training_pixels(hashgrid_run):
    out = hashgrid_run / "big.png"
    code, _, err = _main("render", hashgrid_run / "run", "--method", "mean", "--size", "32x32",
                         "--out", out)  # fmt: skip
    assert code == 0, err
    assert iio.imread(out).shape[:2] == (32, 32)
    graphdef, params, _, _ = runs.load_run(hashgrid_run / "run")
    means = np.asarray(mdl.mx.mean(mdl.apply(graphdef, params, data.pixel_grid(32, 32))))
    blocks = means.reshape(8, 4, 8, 4, 3)  # [row pixel, row within, col pixel, col within, rgb]
    # Within one training pixel the 4 x 4 rendered pixels are not one colour (no blocks) ...
    spread = blocks.max(axis=(1, 3)) - blocks.min(axis=(1, 3))
    assert np.all(spread > 1e-4), spread.min()
    # ... and neighbouring rendered pixels differ inside a training pixel, along both axes.
    assert np.all(np.abs(np.diff(blocks, axis=1)).max(axis=-1) > 0)
    assert np.all(np.abs(np.diff(blocks, axis=3)).max(axis=-1) > 0)


def test_resume_keeps_the_encoding(hashgrid_run):
    root = hashgrid_run
    code, out, err = _main("train", root / "a.png", "--epochs", "12", *FLAGS,
                           "--out", root / "run", "--resume")  # fmt: skip
    assert code == 0, err
    assert "resuming" in out
    _, params, config, _ = runs.load_run(root / "run")
    assert config.encoding == "hashgrid" and params["encoding"]["table"].shape == (4, 256, 2)
    code, _, err = _main("train", root / "a.png", "--epochs", "14", "--encoding", "identity",
                         *FLAGS[2:], "--out", root / "run", "--resume")  # fmt: skip
    assert code == 2 and "other settings" in err and "encoding" in err, err


@pytest.mark.parametrize("command", ["demo", "train"])
def test_flags_parse_on_demo_and_train_with_unchanged_defaults(command):
    parser = cli.build_parser()
    rest = ["x.png", "--out", "run"] if command == "train" else []
    args = parser.parse_args([command, *rest, "--encoding", "identity"])  # no longer the default
    assert args.encoding == "identity" and args.fourier_features == 0
    assert (args.hashgrid_levels, args.hashgrid_features, args.hashgrid_log2_table) == (8, 4, 15)
    assert (args.hashgrid_min_res, args.hashgrid_max_res) == (16, 256)
    args = parser.parse_args([command, *FLAGS[:12], *rest])
    assert args.encoding == "hashgrid" and args.hashgrid_max_res == 32


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--encoding", "fourier"], ("error:", "fourier_features > 0")),
        (["--encoding", "hashgrid", "--fourier-features", "8"], ("fourier_features to 0",)),
        (
            ["--encoding", "hashgrid", "--hashgrid-min-res", "64", "--hashgrid-max-res", "8"],
            ("finest",),
        ),
        (["--hashgrid-levels", "0"], ("--hashgrid-levels",)),
        (["--encoding", "radial"], ("--encoding", "invalid choice")),
    ],
)
def test_bad_encoding_flags_are_one_line_errors(tmp_path, extra, words):
    pixels = np.zeros((4, 4, 3), np.uint8)
    iio.imwrite(tmp_path / "a.png", pixels)
    code, out, err = _main("train", tmp_path / "a.png", *extra, "--out", tmp_path / "run")
    lines = [line for line in err.splitlines() if line.startswith("mdn-jax")]
    assert code == 2 and len(lines) == 1, err
    for word in words:
        assert word in lines[0], (word, err)
    assert not (tmp_path / "run" / "checkpoint").exists()
