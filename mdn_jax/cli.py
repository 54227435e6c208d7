"""The `mdn-jax` command: parses arguments into configs and calls the library.

Every user error (bad path, bad image, nonsense flag) ends with one line on stderr,
`mdn-jax: error: <problem>; <fix>`, and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EXIT_USAGE = 2
EXIT_NONFINITE = 3
EXIT_PICTURES = 4  # trained and saved, but a picture could not be made (one line says which)
DEMO_EPOCHS = 60


def _number(convert, *, allow_zero: bool):
    """An argparse type: `convert` (int or float) of a positive (or non-negative) finite value."""
    words = ("a non-negative " if allow_zero else "a positive ") + (
        "integer" if convert is int else "number"
    )

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}") from None
        if not (value >= 0 if allow_zero else value > 0) or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected {words}, got {text}")
        return value

    return parse


_positive_int = _number(int, allow_zero=False)
_non_negative_int = _number(int, allow_zero=True)
_positive_float = _number(float, allow_zero=False)
_non_negative_float = _number(float, allow_zero=True)


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("×", "x").split("x")
    try:
        if len(parts) > 2:
            raise ValueError(text)
        height, width = (int(p) for p in parts) if len(parts) == 2 else (int(parts[0]),) * 2
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 128x128, got {text!r}") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"expected positive HxW such as 128x128, got {text!r}")
    return height, width


def _hidden(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated widths such as 100,100,50, got {text!r}"
        ) from None
    if not widths or any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(
            f"expected positive comma-separated widths such as 100,100,50, got {text!r}"
        )
    return widths


def _add_training_flags(parser: argparse.ArgumentParser, *, epochs: int, frame_every: int) -> None:
    parser.add_argument(
        "--components", type=_positive_int, default=10, help="mixture components K (default 10)"
    )
    parser.add_argument(
        "--structure",
        choices=("joint", "per_dim", "full"),
        default="joint",
        help="joint: shared weights, diagonal (default); per_dim: a mixture per channel; "
        "full: full covariance",
    )
    parser.add_argument(
        "--hidden",
        type=_hidden,
        default=(100, 100, 100, 100, 100, 50),
        help="trunk widths (default 100,100,100,100,100,50)",
    )
    parser.add_argument(
        "--epochs", type=_positive_int, default=epochs, help=f"epochs (default {epochs})"
    )
    parser.add_argument(
        "--batch-size", type=_positive_int, default=200, help="batch size (default 200)"
    )
    parser.add_argument(
        "--lr", type=_positive_float, default=1e-3, help="Adam learning rate (default 1e-3)"
    )
    parser.add_argument(
        "--schedule",
        choices=("constant", "cosine", "warmup_cosine"),
        default="constant",
        help="learning-rate schedule (default constant)",
    )
    parser.add_argument(
        "--loss",
        choices=("nll", "discretised"),
        default="nll",
        help="nll: continuous likelihood (default); discretised: mass of each colour's 8-bit bin",
    )
    parser.add_argument(
        "--on-nonfinite",
        choices=("stop", "skip"),
        default="stop",
        help="a NaN/inf loss or gradient is never applied; stop (default) ends training with "
        "a message, skip carries on and counts skipped steps",
    )
    parser.add_argument(
        "--clip-norm", type=_positive_float, default=None, help="clip gradients to this global norm"
    )
    parser.add_argument(
        "--scale-floor",
        type=_positive_float,
        default=0.01,
        help="smallest standard deviation (default 0.01, ~2.5/255)",
    )
    parser.add_argument(
        "--fourier-features",
        type=_non_negative_int,
        default=0,
        help="random Fourier features of the position (0: raw positions, the default)",
    )
    parser.add_argument(
        "--fourier-scale",
        type=_positive_float,
        default=10.0,
        help="standard deviation of the Fourier frequencies (default 10)",
    )
    parser.add_argument(
        "--init",
        choices=("random", "spread"),
        default="random",
        help="random: the usual initialisation (default); spread: component means start on "
        "colours spread over the images and the head starts small (see docs/reproduce)",
    )
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="compute dtype of the trunk's matrix products; bfloat16 keeps params, optimiser "
        "state and the likelihood in float32 (default float32)",
    )
    parser.add_argument(
        "--devices",
        type=_positive_int,
        default=None,
        help="data parallel over this many devices (default: all; the batch size must be a "
        "multiple); with several processes, the total over all of them",
    )
    cluster = parser.add_argument_group("several processes (see README: Several devices and hosts)")
    cluster.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-process run: jax.distributed.initialize() from the cluster's "
        "environment (SLURM, Open MPI, TPU pods), or from the three flags below",
    )
    cluster.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        default=None,
        help="address of process 0 (implies --distributed)",
    )
    cluster.add_argument(
        "--num-processes", type=_positive_int, default=None, help="processes in all"
    )
    cluster.add_argument(
        "--process-id", type=_non_negative_int, default=None, help="this process's index, 0-based"
    )
    parser.add_argument(
        "--frame-every",
        type=_non_negative_int,
        default=frame_every,
        help=f"epochs between montage frames (default {frame_every})",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=_non_negative_int,
        default=25,
        help="epochs between checkpoints (default 25; one is always written at the end)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoint in --out"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, `mdn-jax: error: ...` (the usage block is one --help away)."""

    def error(self, message):
        command = self.prog.split(" ", 1)[1] + ": " if " " in self.prog else ""
        self.exit(EXIT_USAGE, f"mdn-jax: error: {command}{message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mdn-jax",
        description="Mixture Density Networks in JAX: "
        "learn images as mixtures, watch them learn, render what they learned.",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    demo = sub.add_parser(
        "demo",
        help="train on five built-in generated images (about 2 minutes on a laptop CPU)",
        description="Train a 10-component MDN on five built-in 128x128 images and write a run "
        "folder with renders, a montage GIF and metrics.",
    )
    demo.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    demo.add_argument(
        "--images", type=_positive_int, default=5, help="how many built-in images, 1-8 (default 5)"
    )
    _add_training_flags(demo, epochs=DEMO_EPOCHS, frame_every=3)
    demo.set_defaults(handler=_run_demo)

    train = sub.add_parser(
        "train",
        help="train on your images",
        description="Train an MDN that maps pixel "
        "position to colour on one or more images (files or folders).",
    )
    train.add_argument(
        "inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files or folders of images"
    )
    train.add_argument("--out", required=True, help="run folder to write")
    train.add_argument(
        "--size",
        type=_size,
        default=None,
        help="resize every image to HxW (needed if sizes differ)",
    )
    _add_training_flags(train, epochs=100, frame_every=5)
    train.set_defaults(handler=_run_train)

    render = sub.add_parser(
        "render",
        help="render a trained run to a PNG",
        description="Render a trained run folder at any resolution.",
    )
    render.add_argument("run", metavar="DIR", help="a run folder written by train or demo")
    render.add_argument(
        "--method",
        choices=("mode", "mean", "sample", "component", "uncertainty", "components"),
        default="mode",
        help="mode: mean of the heaviest component (default); mean: mixture mean; "
        "sample: random draws; component: component K's mean; uncertainty: predictive std heat map; "
        "components: which component wins where",
    )
    render.add_argument(
        "--component",
        type=_non_negative_int,
        default=0,
        help="component index for --method component",
    )
    render.add_argument(
        "--size", type=_size, default=None, help="output HxW (default: the training size)"
    )
    render.add_argument(
        "--temperature", type=_non_negative_float, default=1.0, help="weight temperature for sample"
    )
    render.add_argument(
        "--sigma-temperature",
        type=_non_negative_float,
        default=1.0,
        help="standard-deviation multiplier for sample",
    )
    render.add_argument(
        "--samples", type=_positive_int, default=1, help="number of samples, laid out in a grid"
    )
    render.add_argument("--seed", type=_non_negative_int, default=0, help="random seed for sample")
    render.add_argument(
        "--chunk", type=_positive_int, default=65536, help="pixels per compiled chunk"
    )
    render.add_argument(
        "--devices",
        type=_positive_int,
        default=None,
        help="split each chunk over this many local devices (default: all)",
    )
    render.add_argument("--out", required=True, help="PNG file to write")
    render.set_defaults(handler=_run_render)

    reproduce = sub.add_parser(
        "reproduce",
        help="run the reference experiments and write report.md (about 7 minutes on a 2-core CPU)",
        description="Run the reference example's experiments (one image K=1; two images K=1 and K=10; all images "
        "per_dim and joint K=10; three trunk sizes) and the improvements (Fourier features, the "
        "discretised loss, spread initial means) on the built-in images or yours, and write "
        "DIR/report.md. Running it again continues where it stopped.",
    )
    reproduce.add_argument(
        "inputs",
        nargs="*",
        metavar="IMAGE_OR_FOLDER",
        help="two or more images or folders (default: the five built-in images)",
    )
    reproduce.add_argument(
        "--out", default="runs/reproduce", help="output folder (default runs/reproduce)"
    )
    reproduce.add_argument(
        "--full",
        action="store_true",
        help="the reference's 300 epochs per experiment (12 times the default 25)",
    )
    reproduce.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help="epochs per experiment (default 25; --full: 300)",
    )
    reproduce.add_argument(
        "--size", type=_size, default=(128, 128), help="image size HxW (default 128x128)"
    )
    reproduce.add_argument(
        "--only",
        type=lambda text: tuple(t.strip() for t in text.split(",") if t.strip()),
        default=None,
        help="comma-separated experiment names to run (default: all)",
    )
    reproduce.add_argument("--no-progress", action="store_true", help="no progress bar")
    reproduce.set_defaults(handler=_run_reproduce)

    bench = sub.add_parser(
        "bench",
        help="run the benchmarks (training, rendering, likelihood)",
        description="Run benchmarks/train_throughput.py, render_throughput.py and "
        "likelihood_throughput.py from a source checkout; quick by default.",
    )
    bench.add_argument("--full", action="store_true", help="the long version of every benchmark")
    bench.add_argument(
        "--only", choices=("train", "render", "likelihood"), default=None, help="run one benchmark"
    )
    bench.set_defaults(handler=_run_bench)
    return parser


def _configs(args, images):
    from mdn_jax import runs, train

    init = runs.spread_init(images, args.components) if args.init == "spread" else {}
    model_config = runs.image_model_config(
        components=args.components,
        structure=args.structure,
        hidden=args.hidden,
        scale_floor=args.scale_floor,
        fourier_features=args.fourier_features,
        fourier_scale=args.fourier_scale,
        dtype=args.dtype,
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
    )
    options = runs.RunOptions(
        frame_every=args.frame_every,
        checkpoint_every=args.checkpoint_every,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    return model_config, train_config, options


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
    from mdn_jax import runs

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
        f"NLL {values['nll_nats']:.3f} nats/pixel, {values['bits_per_channel']:.3f} bits/channel; component PSNR "
        f"{', '.join(f'{v:.1f}' for v in values['component_psnr'])} dB; coverage PSNR "
        f"{', '.join(f'{v:.1f}' for v in values['coverage_psnr'])} dB; "
        f"{values['samples_per_second'] / 1e3:.0f}k samples/s on {values['devices']} "
        f"device{'s' if values['devices'] > 1 else ''}"
    )
    print(
        f"wrote {out}/: open montage.gif (training progress), final_mode.png, components.png, "
        f"samples.png, uncertainty.png, loss.png; scores in metrics.json"
    )
    if values.get("interrupted"):
        from mdn_jax import signals

        return signals.exit_code()  # 130 after Ctrl-C, 143 after SIGTERM
    return EXIT_PICTURES if values.get("skipped_pictures") else 0


def _run_demo(args) -> int:
    _start_processes(args)
    from mdn_jax import data

    images = data.demo_images(count=args.images)
    return _train_and_report(
        images, args, {"source": "demo", "count": args.images, "height": 128, "width": 128}
    )


def _run_train(args) -> int:
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


def _run_render(args) -> int:
    import jax

    from mdn_jax import data, media, render, runs

    run_dir = Path(args.run)
    if not args.out.lower().endswith(".png"):
        raise ValueError(f"--out must be a .png file, got {args.out!r}")
    if Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a folder; give a .png file name")
    graphdef, params, model_config, _ = runs.load_run(run_dir)
    size = args.size or _training_size(run_dir)
    count = args.samples if args.method == "sample" else 1
    shape = f"{size[0]}x{size[1]}" if count == 1 else f"{count} samples of {size[0]}x{size[1]}"
    data.check_pixels(
        count * size[0] * size[1],
        what=f"the render ({shape})",
        fix="pass a smaller --size" + (" or fewer --samples" if count > 1 else ""),
    )
    if args.method == "component" and args.component >= model_config.components:
        raise ValueError(
            f"--component {args.component} does not exist: this model has components "
            f"0..{model_config.components - 1}"
        )
    image = render.render(
        graphdef,
        params,
        height=size[0],
        width=size[1],
        method=args.method,
        component=args.component,
        key=jax.random.key(args.seed),
        num_samples=args.samples,
        temperature=args.temperature,
        sigma_temperature=args.sigma_temperature,
        pixels_per_chunk=args.chunk,
        devices=args.devices,
    )
    if args.method == "sample":
        image = image[0] if len(image) == 1 else media.grid(list(image))
    media.save_png(args.out, image)
    print(f"wrote {args.out} ({args.method}, {size[0]}x{size[1]})")
    return 0


def _run_reproduce(args) -> int:
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
    """(height, width) from a run folder's config.json, which a person may have edited into anything."""
    from mdn_jax import checkpoint

    try:
        info = json.loads((run_dir / "config.json").read_text())["data"]
        size = (info["height"], info["width"])
    except (OSError, KeyError, ValueError, TypeError):  # missing, not JSON, not UTF-8, not a dict
        size = None
    if size is None or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size
    ):
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
        "benchmarks/ not found next to the installed package; run mdn-jax bench from a "
        "source checkout of mdn_jax"
    )


def _run_bench(args) -> int:
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


def _drop_orbax_closed_loop_noise() -> None:
    """Keep a failed checkpoint read to one line.

    When a damaged checkpoint fails to restore, tensorstore still completes Orbax's other reads
    into the asyncio loop Orbax has closed, and Python prints each 'RuntimeError: Event loop is
    closed' as a traceback through sys.unraisablehook. Those, and only those, are dropped.
    """
    previous = sys.unraisablehook
    if getattr(previous, "drops_closed_loop_noise", False):
        return

    def hook(unraisable):
        if not (
            isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == "Event loop is closed"
        ):
            previous(unraisable)

    hook.drops_closed_loop_noise = True
    sys.unraisablehook = hook


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _drop_orbax_closed_loop_noise()
    parser = build_parser()
    args = parser.parse_args(argv)
    from mdn_jax.checkpoint import CheckpointError
    from mdn_jax.data import DataError, printable
    from mdn_jax.train import NonFiniteError

    try:
        return args.handler(args)
    except (DataError, CheckpointError, ValueError, OSError) as error:
        if isinstance(error, OSError) and error.strerror:
            name = printable(error.filename) if error.filename else ""
            message = f"{name}: {error.strerror}" if name else error.strerror
            message += "; check the path, its permissions and the free disk space"
        elif isinstance(
            error, (DataError, CheckpointError)
        ):  # ours, one line: a newline is a name's
            message = printable(error)
        else:
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"mdn-jax: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except NonFiniteError as error:
        print(f"mdn-jax: error: {error}", file=sys.stderr)
        return EXIT_NONFINITE
    except KeyboardInterrupt:
        print("mdn-jax: aborted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
