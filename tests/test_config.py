"""The configs: validation messages word for word, the JSON round trip, one home for choices."""

import inspect
import json
import re

import numpy as np
import pytest

import mdn_jax
from mdn_jax import model, train

NAN = float("nan")

# The exact messages users see (the CLI prints them as its error line); pinned word for word.
MODEL_MESSAGES = [
    (dict(in_features=0), "in_features must be a positive integer, got 0"),
    (dict(out_features=True), "out_features must be a positive integer, got True"),
    (dict(components=2.0), "components must be a positive integer, got 2.0"),
    (dict(hidden=(10, -1)), "every hidden width must be a positive integer, got -1"),
    (dict(structure="diag"), "structure must be one of joint, per_dim, full, got 'diag'"),
    (
        dict(activation="swishy"),
        "activation must be one of relu, gelu, silu, tanh, softplus, elu, got 'swishy'",
    ),
    (dict(mean_activation="tanh"), "mean_activation must be 'none' or 'sigmoid', got 'tanh'"),
    (dict(scale_floor=0.0), "scale_floor must be a positive number, got 0.0"),
    (dict(scale_floor=NAN), "scale_floor must be a positive number, got nan"),
    (dict(scale_floor="0.1"), "scale_floor must be a positive number, got '0.1'"),
    (dict(input_offset=(1.0,)), "input_offset needs 2 values (one per input), got 1"),
    (dict(input_offset=(NAN, 1.0)), "input_offset must be finite, got (nan, 1.0)"),
    (dict(input_scale=(1.0, 0.0)), "input_scale must be positive, got (1.0, 0.0)"),
    (dict(fourier_features=-1), "fourier_features must be a non-negative integer, got -1"),
    (dict(fourier_scale=float("inf")), "fourier_scale must be a positive number, got inf"),
    (dict(dtype="float16"), "dtype must be one of float32, bfloat16, got 'float16'"),
    (
        dict(components=2, mean_init=((0.1, 0.2, 0.3),)),
        "mean_init must be 2 rows (components) of 3 values (outputs), got 1 rows of lengths [3]",
    ),
    (dict(components=1, out_features=1, mean_init=((NAN,),)), "mean_init must be finite"),
    (
        dict(components=1, out_features=1, mean_init=(("red",),)),
        "mean_init must be 1 rows of 1 numbers, got (('red',),)",
    ),
    (
        dict(components=1, out_features=1, mean_init=((1.5,),), mean_activation="sigmoid"),
        "mean_init must lie in (0, 1) with mean_activation='sigmoid'",
    ),
    (dict(head_init_scale=-1), "head_init_scale must be a positive number, got -1"),
]

TRAIN_MESSAGES = [
    (dict(epochs=0), "epochs must be a positive integer, got 0"),
    (dict(batch_size=-5), "batch_size must be a positive integer, got -5"),
    (dict(seed=-1), "seed must be a non-negative integer, got -1"),
    (dict(learning_rate=-1e-3), "learning_rate must be a positive number, got -0.001"),
    (
        dict(schedule="linear"),
        "schedule must be one of constant, cosine, warmup_cosine, got 'linear'",
    ),
    (dict(on_nonfinite="ignore"), "on_nonfinite must be 'stop' or 'skip', got 'ignore'"),
    (dict(loss="mse"), "loss must be one of nll, discretised, got 'mse'"),
    (dict(clip_norm=0.0), "clip_norm must be a positive number or None, got 0.0"),
    (dict(clip_norm=NAN), "clip_norm must be a positive number or None, got nan"),
]


@pytest.mark.parametrize("bad, message", MODEL_MESSAGES)
def test_model_config_messages_word_for_word(bad, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        model.ModelConfig(**bad)


@pytest.mark.parametrize("bad, message", TRAIN_MESSAGES)
def test_train_config_messages_word_for_word(bad, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        train.TrainConfig(**bad)


@pytest.mark.parametrize("cls, kind", [(model.ModelConfig, "model"), (train.TrainConfig, "train")])
def test_unknown_keys_are_refused_naming_them_and_the_known_ones(cls, kind):
    known = sorted(cls().to_dict())
    with pytest.raises(ValueError) as error:
        cls.from_dict({"colour": "red", "seed": 1} if kind == "model" else {"colour": "red"})
    unknown = ["colour", "seed"] if kind == "model" else ["colour"]
    assert str(error.value) == f"{kind} config has unknown keys {unknown}; known: {known}"


@pytest.mark.parametrize(
    "config",
    [
        model.ModelConfig(),
        model.ModelConfig(
            structure="per_dim",
            hidden=(4,),
            components=2,
            out_features=2,
            input_offset=(0.5, -1),
            input_scale=(2, 3.5),
            mean_init=((0.1, 0.2), (0.3, 0.4)),
            mean_activation="sigmoid",
            fourier_features=3,
        ),
        train.TrainConfig(),
        train.TrainConfig(clip_norm=2.5, schedule="cosine", loss="discretised", seed=7),
    ],
)
def test_configs_round_trip_through_json(config):
    text = json.dumps(config.to_dict())
    again = type(config).from_dict(json.loads(text))
    assert again == config and hash(again) == hash(config)
    assert json.dumps(again.to_dict()) == text


def test_numpy_scalars_become_python_ones_so_the_config_stays_json():
    config = model.ModelConfig(components=np.int64(4), scale_floor=np.float32(0.5))
    assert type(config.components) is int and type(config.scale_floor) is float
    assert config.components == 4 and config.scale_floor == 0.5
    settings = train.TrainConfig(batch_size=np.int32(8), learning_rate=np.float32(0.25))
    assert json.loads(json.dumps(settings.to_dict()))["batch_size"] == 8


def test_configs_are_one_class_wherever_imported_from():
    from mdn_jax import config

    assert mdn_jax.ModelConfig is model.ModelConfig is config.ModelConfig
    assert mdn_jax.TrainConfig is train.TrainConfig is config.TrainConfig
    assert model.STRUCTURES is config.STRUCTURES and train.SCHEDULES is config.SCHEDULES
    assert model.DTYPES is config.DTYPES and model.MEAN_ACTIVATIONS is config.MEAN_ACTIVATIONS


def test_every_activation_name_is_a_function_of_the_model():
    from mdn_jax import config

    assert tuple(model.ACTIVATIONS) == config.ACTIVATIONS
    x = np.linspace(-3, 3, 7, dtype=np.float32)
    np.testing.assert_allclose(model.ACTIVATIONS["tanh"](x), np.tanh(x), rtol=1e-6)
    np.testing.assert_allclose(model.ACTIVATIONS["relu"](x), np.maximum(x, 0), rtol=0)


def test_reference_trunk_is_the_default_everywhere():
    from mdn_jax import cli, config, image_defaults, reproduce_experiments

    assert config.REFERENCE_TRUNK == (100, 100, 100, 100, 100, 50)
    assert model.ModelConfig().hidden == config.REFERENCE_TRUNK
    assert reproduce_experiments.REFERENCE_TRUNK == config.REFERENCE_TRUNK
    # On images the CLI defaults to the hash grid; identity and Fourier keep the reference.
    args = image_defaults.resolve(
        cli.build_parser().parse_args(["train", "x.png", "--out", "run", "--encoding", "identity"])
    )
    assert args.hidden == config.REFERENCE_TRUNK


def test_cli_defaults_and_choices_are_the_configs():
    from mdn_jax import cli, config, image_defaults, runs

    args = image_defaults.resolve(  # the reference settings: the encoding identity asks for
        cli.build_parser().parse_args(["train", "x.png", "--out", "run", "--encoding", "identity"])
    )
    defaults = train.TrainConfig()
    assert (args.epochs, args.batch_size, args.lr, args.schedule) == (
        defaults.epochs,
        defaults.batch_size,
        defaults.learning_rate,
        defaults.schedule,
    )
    assert (args.clip_norm, args.seed, args.loss, args.on_nonfinite) == (
        defaults.clip_norm,
        defaults.seed,
        defaults.loss,
        defaults.on_nonfinite,
    )
    image = runs.image_model_config()
    assert (args.components, args.structure, args.scale_floor, args.dtype) == (
        image.components,
        image.structure,
        image.scale_floor,
        image.dtype,
    )
    assert (args.fourier_features, args.fourier_scale) == (
        image.fourier_features,
        image.fourier_scale,
    )
    train_parser = cli.build_parser()._subparsers._group_actions[0].choices["train"]
    choices = {a.dest: a.choices for a in train_parser._actions if a.choices}
    assert choices["structure"] == config.STRUCTURES and choices["dtype"] == config.DTYPES
    assert choices["schedule"] == config.SCHEDULES and choices["loss"] == config.LOSSES
    assert choices["on_nonfinite"] == config.ON_NONFINITE


@pytest.mark.parametrize(
    "value, integer, allow_zero, expected",
    [
        (1, True, False, True),
        (np.int64(3), True, False, True),
        (10**400, True, False, True),  # huge ints are finite (no float overflow)
        (0, True, False, False),
        (0, True, True, True),
        (-1, True, True, False),
        (True, True, False, False),
        (2.0, True, False, False),
        (0.5, False, False, True),
        (np.float32(0.5), False, False, True),
        (0.0, False, True, True),
        (NAN, False, True, False),
        (float("inf"), False, False, False),
        ("1", False, False, False),
        (None, False, False, False),
    ],
)
def test_is_positive(value, integer, allow_zero, expected):
    from mdn_jax import config

    assert config.is_positive(value, integer=integer, allow_zero=allow_zero) is expected


def test_head_validates_its_options_without_a_model_config():
    import flax.nnx as nnx

    rngs = nnx.Rngs(params=0)
    with pytest.raises(ValueError, match="^components must be a positive integer, got 0$"):
        model.MDNHead(4, out_features=2, components=0, rngs=rngs)
    with pytest.raises(ValueError, match="^structure must be one of"):
        model.MDNHead(4, out_features=2, components=2, structure="diag", rngs=rngs)
    with pytest.raises(ValueError, match="^scale_floor must be a positive number"):
        model.MDNHead(4, out_features=2, components=2, scale_floor=-1.0, rngs=rngs)
    head = model.MDNHead(4, out_features=2, components=3, structure="full", rngs=rngs)
    assert dict(head.options) == dict(
        structure="full", components=3, out_features=2, scale_floor=1e-3, mean_activation="none"
    )
    assert dict(head.options) == model.head_options(
        model.ModelConfig(structure="full", components=3, out_features=2)
    )
    defaults = {
        name: p.default
        for name, p in inspect.signature(model.MDNHead.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    assert defaults == dict(structure="joint", scale_floor=1e-3, mean_activation="none")
