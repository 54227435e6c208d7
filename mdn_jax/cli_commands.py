"""What each `mdn-jax` subcommand does, once `mdn_jax.cli` has parsed its arguments.

One `run_<command>(args) -> exit code` per subcommand; each only turns arguments into configs
and calls the library. User errors are raised (ValueError, DataError, CheckpointError,
OSError) and become one line in `mdn_jax.cli.main`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mdn_jax import config as cfg

EXIT_PICTURES = 4  # trained and saved, but a picture could not be made (one line says which)


def _configs(args, images):
    from mdn_jax import image_defaults, runs, train

    holdout = _holdout(args)
    if args.encoding is None and args.resume:  # the defaults follow the run's own encoding
        args.encoding = image_defaults.stored_encoding(args.out)
    image_defaults.resolve(args, pixels=image_defaults.training_pixels(images, holdout))
    init = runs.spread_init(images, args.components) if args.init == "spread" else {}
    model_config = runs.image_model_config(
        components=args.components,
        structure=args.structure,
        hidden=args.hidden,
        scale_floor=args.scale_floor,
        fourier_features=args.fourier_features,
        fourier_scale=args.fourier_scale,
        encoding=args.encoding,
        hashgrid_levels=args.hashgrid_levels,
        hashgrid_features=args.hashgrid_features,
        hashgrid_log2_table=args.hashgrid_log2_table,
        hashgrid_min_res=args.hashgrid_min_res,
        hashgrid_max_res=args.hashgrid_max_res,
        dtype=args.dtype,
        dropout=args.dropout,
        scale_activation=_scale_activation(args) or cfg.ModelConfig.scale_activation,
        **init,
    )
    train_config = train.TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        schedule=args.schedule,
        clip_norm=args.clip_norm,
        seed=args.seed,
        loss=args.loss,
        on_nonfinite=args.on_nonfinite,
        adam_b2=args.adam_b2,
        adam_eps=args.adam_eps,
    )
    options = runs.RunOptions(
        frame_every=args.frame_every,
        checkpoint_every=args.checkpoint_every,
        progress=not args.no_progress and sys.stderr.isatty(),
        holdout=holdout,
    )
    return model_config, train_config, options


def _holdout(args) -> float:
    """--holdout, or on --resume without it the share the run was started with (config.json)."""
    if args.holdout is not None or not args.resume:
        return args.holdout or 0.0
    try:
        return float(json.loads((Path(args.out) / "config.json").read_text())["run"]["holdout"])
    except (OSError, KeyError, ValueError, TypeError):  # no such file or an older run: none
        return 0.0


def _scale_activation(args) -> str:
    """On --resume the one the run was trained with (config.json; softplus before the option)."""
    try:
        model = json.loads((Path(args.out) / "config.json").read_text())["model"]
        return {**cfg.ModelConfig._LEGACY, **model}["scale_activation"] if args.resume else ""
    except (OSError, KeyError, ValueError, TypeError):  # a fresh run, or no such file
        return ""


def _start_processes(args) -> None:
    """`jax.distributed.initialize()` when asked to, before JAX touches a device."""
    explicit = {
        "--coordinator": args.coordinator,
        "--num-processes": args.num_processes,
        "--process-id": args.process_id,
    }
    given = [flag for flag, value in explicit.items() if value is not None]
    if not args.distributed and not given:
        return
    if given and len(given) < 3:
        missing = [flag for flag in explicit if flag not in given]
        raise ValueError(
            f"{', '.join(given)} needs {' and '.join(missing)} too (or none of the three, to read "
            "the cluster's environment)"
        )
    if given and args.process_id >= args.num_processes:
        raise ValueError(
            f"--process-id {args.process_id} must be below --num-processes {args.num_processes}"
        )
    import jax

    if given:
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    else:
        jax.distributed.initialize()


def _train_and_report(images, args, data_info) -> int:
    from mdn_jax import cli_ensemble, runs

    members = cli_ensemble.members(args)
    if members is not None:  # --ensemble M or per-member lists: M models in one call
        return cli_ensemble.train_and_report(images, args, data_info, members)
    model_config, train_config, options = _configs(args, images)
    values = runs.train_on_images(
        images,
        args.out,
        model_config=model_config,
        train_config=train_config,
        options=options,
        resume=args.resume,
        data_info=data_info,
        devices=args.devices,
    )
    if values is None:  # not process 0: that one reports and writes the files
        return 0
    out = Path(args.out)
    print(
        f"NLL {values['nll_nats']:.3f} nats/pixel, "
        f"{values['bits_per_channel']:.3f} bits/channel; component PSNR "
        f"{', '.join(f'{v:.1f}' for v in values['component_psnr'])} dB; coverage PSNR "
        f"{', '.join(f'{v:.1f}' for v in values['coverage_psnr'])} dB; "
        f"{values['samples_per_second'] / 1e3:.0f}k samples/s on {values['devices']} "
        f"device{'s' if values['devices'] > 1 else ''}"
    )
    print(
        f"wrote {out}/: open montage.gif (training progress), reconstructions.png, "
        f"final_mode.png, components.png, samples.png, uncertainty.png, loss.png"
        f"{', calibration.png' if values.get('calibration') else ''}; scores in metrics.json, "
        f"one line per epoch in history.jsonl"
    )
    if values.get("interrupted"):
        from mdn_jax import signals

        return signals.exit_code()  # 130 after Ctrl-C, 143 after SIGTERM
    return EXIT_PICTURES if values.get("skipped_pictures") else 0


def run_demo(args) -> int:
    _start_processes(args)
    from mdn_jax import data

    images = data.demo_images(count=args.images)
    return _train_and_report(
        images, args, {"source": "demo", "count": args.images, "height": 128, "width": 128}
    )


def run_train(args) -> int:
    if not args.inputs:  # the same line argparse gave when IMAGE_OR_FOLDER was nargs="+"
        raise ValueError(
            "train: the following arguments are required: IMAGE_OR_FOLDER; see mdn-jax train --help"
        )
    _start_processes(args)
    from mdn_jax import data

    images = data.load_images(args.inputs, size=args.size)
    info = {
        "source": [str(p) for p in data.find_images(args.inputs)],
        "count": len(images),
        "height": int(images.shape[1]),
        "width": int(images.shape[2]),
    }
    return _train_and_report(images, args, info)


def run_render(args) -> int:
    from mdn_jax import cli_render

    return cli_render.run_render(args)


def run_reproduce(args) -> int:
    import numpy as np

    from mdn_jax import data, reproduce

    if args.full and args.epochs is not None:
        raise ValueError("--full and --epochs both set the epochs; pass one of them")
    epochs = reproduce.FULL_EPOCHS if args.full else args.epochs or reproduce.DEFAULT_EPOCHS
    if args.inputs:
        images = data.load_images(args.inputs, size=args.size)
        source = ", ".join(p.name for p in data.find_images(args.inputs))
    else:
        data.check_resize(args.size)
        images = np.stack([data.resize(image, args.size) for image in data.demo_images(count=5)])
        source = "the five built-in demo images"
    command = (
        "mdn-jax " + " ".join(sys.argv[1:])
        if sys.argv[1:2] == ["reproduce"]
        else "mdn-jax reproduce"
    )
    try:
        path = reproduce.run(
            images,
            args.out,
            epochs=epochs,
            only=args.only,
            source=source,
            command=command,
            progress=not args.no_progress and sys.stderr.isatty(),
        )
    except KeyboardInterrupt as stop:
        print(
            f"mdn-jax: {stop or 'interrupted'}; run the same command again to continue",
            file=sys.stderr,
        )
        return 130
    print(f"open {path}")
    return 0


def _training_size(run_dir: Path) -> tuple[int, int]:
    """(height, width) from a run folder's config.json, which a person may have edited into
    anything."""
    from mdn_jax import checkpoint

    try:
        info = json.loads((run_dir / "config.json").read_text())["data"]
        size = (info["height"], info["width"])
    except (OSError, KeyError, ValueError, TypeError):  # missing, not JSON, not UTF-8, not a dict
        size = None
    if size is None or not all(cfg.is_positive(v, integer=True) for v in size):
        raise checkpoint.CheckpointError(
            f"{run_dir}/config.json has no usable training size (data.height and "
            "data.width, positive integers); pass --size HxW"
        )
    return size


def _benchmarks_dir() -> Path:
    import mdn_jax

    for candidate in (
        Path(mdn_jax.__file__).resolve().parents[1] / "benchmarks",
        Path.cwd() / "benchmarks",
    ):
        if (candidate / "train_throughput.py").exists():
            return candidate
    raise FileNotFoundError(
        "the benchmarks are not installed with the package; get a source checkout of mdn_jax "
        "(its benchmarks/ folder) and run mdn-jax bench inside it"
    )


def run_bench(args) -> int:
    import subprocess

    folder = _benchmarks_dir()
    names = [args.only] if args.only else ["train", "render", "likelihood"]
    status = 0
    for name in names:
        command = [sys.executable, str(folder / f"{name}_throughput.py")] + (
            ["--full"] if args.full else []
        )
        print(f"$ {' '.join(command)}", flush=True)
        status = status or subprocess.run(command).returncode
    return status
