"""The `mdn-jax` command: the parser, the subcommands and the one-line error handling.

Four modules: this one (the subcommands' parsers and `main`), `mdn_jax.cli_types` (argument
types), `mdn_jax.cli_flags` (the training flags, with choices and defaults from `mdn_jax.config`)
and `mdn_jax.cli_commands` (what each subcommand does: parse arguments into configs, call the
library).

Every user error (bad path, bad image, nonsense flag) ends with one line on stderr,
`mdn-jax: error: <problem>; <fix>`, and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from mdn_jax import cli_commands as commands
from mdn_jax import render as rd
from mdn_jax.cli_flags import (
    add_training_flags,
    non_negative_float,
    non_negative_int,
    positive_int,
    size,
)

EXIT_USAGE = 2
EXIT_NONFINITE = 3
EXIT_PICTURES = commands.EXIT_PICTURES
DEMO_EPOCHS = 60


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
    parser.add_argument("--version", action="version", version=f"mdn-jax {_version()}")
    subcommands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    _add_demo(subcommands)
    _add_train(subcommands)
    _add_render(subcommands)
    _add_reproduce(subcommands)
    _add_bench(subcommands)
    return parser


def _add_demo(subcommands) -> None:
    demo = subcommands.add_parser(
        "demo",
        help="train on five built-in generated images (about 2 minutes on a laptop CPU)",
        description="Train a 10-component MDN on five built-in 128x128 images and write a run "
        "folder with renders, a montage GIF and metrics.",
    )
    demo.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    demo.add_argument(
        "--images", type=positive_int, default=5, help="how many built-in images, 1-8 (default 5)"
    )
    add_training_flags(demo, epochs=DEMO_EPOCHS, frame_every=3)
    demo.set_defaults(handler=commands.run_demo)


def _add_train(subcommands) -> None:
    train = subcommands.add_parser(
        "train",
        help="train on your images",
        description="Train an MDN that maps pixel "
        "position to colour on one or more images (files or folders).",
    )
    train.add_argument(
        "inputs",
        nargs="*",  # required unless --config names them: checked in run_train
        metavar="IMAGE_OR_FOLDER",
        help="image files or folders of images",
    )
    train.add_argument("--out", required=True, help="run folder to write")
    train.add_argument(
        "--config",
        metavar="RUN/config.json",
        default=None,
        help="repeat the settings (and, without IMAGE_OR_FOLDER, the images) of an earlier "
        "run; flags given here override them",
    )
    train.add_argument(
        "--size",
        type=size,
        default=None,
        help="resize every image to HxW (needed if sizes differ)",
    )
    add_training_flags(train, epochs=100, frame_every=5)
    train.set_defaults(handler=commands.run_train)


def _add_render(subcommands) -> None:
    render = subcommands.add_parser(
        "render",
        help="render a trained run to a PNG",
        description="Render a trained run folder at any resolution.",
    )
    render.add_argument("run", metavar="DIR", help="a run folder written by train or demo")
    render.add_argument(
        "--method",
        choices=rd.METHODS,
        default="mode",
        help="mode: mean of the heaviest component (default); mean: mixture mean; "
        "sample: random draws; component: component K's mean; "
        "uncertainty: predictive std heat map; "
        "components: which component wins where",
    )
    render.add_argument(
        "--component",
        type=non_negative_int,
        default=0,
        help="component index for --method component",
    )
    render.add_argument(
        "--size", type=size, default=None, help="output HxW (default: the training size)"
    )
    _add_sample_flags(render)
    render.add_argument(
        "--chunk", type=positive_int, default=65536, help="pixels per compiled chunk"
    )
    render.add_argument(
        "--devices",
        type=positive_int,
        default=None,
        help="split each chunk over this many local devices (default: all)",
    )
    render.add_argument(
        "--member",
        type=non_negative_int,
        default=None,
        help="with a run trained with --ensemble: render member M alone (default: the "
        "ensemble, every member's mixture as one)",
    )
    render.add_argument("--out", required=True, help="PNG file to write")
    render.set_defaults(handler=commands.run_render)


def _add_sample_flags(render) -> None:
    """The render flags of `--method sample`: temperatures, how many draws, their seed."""
    render.add_argument(
        "--temperature", type=non_negative_float, default=1.0, help="weight temperature for sample"
    )
    render.add_argument(
        "--sigma-temperature",
        type=non_negative_float,
        default=1.0,
        help="standard-deviation multiplier for sample",
    )
    render.add_argument(
        "--samples", type=positive_int, default=1, help="number of samples, laid out in a grid"
    )
    render.add_argument("--seed", type=non_negative_int, default=0, help="random seed for sample")
    render.add_argument(
        "--coherent",
        action="store_true",
        help="with --method sample: one random draw per sample shared by all its pixels, so a "
        "sample looks like an image, not per-pixel noise (each pixel's marginal is unchanged)",
    )


def _add_reproduce(subcommands) -> None:
    reproduce = subcommands.add_parser(
        "reproduce",
        help="run the reference experiments and write report.md (about 7 minutes on a 2-core CPU)",
        description="Run the reference example's experiments "
        "(one image K=1; two images K=1 and K=10; all images "
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
        type=positive_int,
        default=None,
        help="epochs per experiment (default 25; --full: 300)",
    )
    reproduce.add_argument(
        "--size", type=size, default=(128, 128), help="image size HxW (default 128x128)"
    )
    reproduce.add_argument(
        "--only",
        type=lambda text: tuple(t.strip() for t in text.split(",") if t.strip()),
        default=None,
        help="comma-separated experiment names to run (default: all)",
    )
    reproduce.add_argument("--no-progress", action="store_true", help="no progress bar")
    reproduce.set_defaults(handler=commands.run_reproduce)


def _add_bench(subcommands) -> None:
    bench = subcommands.add_parser(
        "bench",
        help="run the benchmarks (training, rendering, likelihood)",
        description="Run benchmarks/train_throughput.py, render_throughput.py and "
        "likelihood_throughput.py from a source checkout; quick by default.",
    )
    bench.add_argument("--full", action="store_true", help="the long version of every benchmark")
    bench.add_argument(
        "--only", choices=("train", "render", "likelihood"), default=None, help="run one benchmark"
    )
    bench.set_defaults(handler=commands.run_bench)


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


def _version() -> str:
    from mdn_jax._version import version

    return version()


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _drop_orbax_closed_loop_noise()
    parser = build_parser()
    args = parser.parse_args(argv)
    from mdn_jax.checkpoint import CheckpointError
    from mdn_jax.data import DataError, printable
    from mdn_jax.train import NonFiniteError

    try:
        if getattr(args, "config", None) is not None:
            from mdn_jax import repeat

            args = repeat.with_config(parser, sys.argv[1:] if argv is None else list(argv), args)
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
