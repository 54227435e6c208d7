"""`mdn-jax render RUN`: a run folder's model to a PNG; for an ensemble run (`train
--ensemble M`) the ensemble as one mixture (`mdn_jax.ensemble_render`), or `--member m` alone."""

from __future__ import annotations

import functools
from pathlib import Path


def run_render(args) -> int:
    import jax

    from mdn_jax import data, media
    from mdn_jax.cli_commands import _training_size

    run_dir = Path(args.run)
    if not args.out.lower().endswith(".png"):
        raise ValueError(f"--out must be a .png file, got {args.out!r}")
    if Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a folder; give a .png file name")
    draw, components, what = _model(run_dir, getattr(args, "member", None))
    size = args.size or _training_size(run_dir)
    count = args.samples if args.method == "sample" else 1
    shape = f"{size[0]}x{size[1]}" if count == 1 else f"{count} samples of {size[0]}x{size[1]}"
    data.check_pixels(
        count * size[0] * size[1],
        what=f"the render ({shape})",
        fix="pass a smaller --size" + (" or fewer --samples" if count > 1 else ""),
    )
    if args.coherent and args.method != "sample":
        raise ValueError(f"--coherent applies to --method sample only, not {args.method}; drop it")
    if args.method == "component" and args.component >= components:
        raise ValueError(
            f"--component {args.component} does not exist: {what} has components "
            f"0..{components - 1}"
        )
    image = draw(
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
        coherent=args.coherent,
    )
    if args.method == "sample":
        image = image[0] if len(image) == 1 else media.grid(list(image))
    media.save_png(args.out, image)
    rendered = "" if what == "this model" else f", {what}"
    print(f"wrote {args.out} ({args.method}, {size[0]}x{size[1]}{rendered})")
    return 0


def _model(run_dir: Path, member: int | None):
    """`(render function, its component count, what it is in words)` for the run folder: a
    single model, an ensemble, or one member of an ensemble."""
    from mdn_jax import ensemble_render, ensemble_runs, render, runs

    fit = ensemble_runs.load_ensemble_run(run_dir) if run_dir.is_dir() else None
    if fit is None:
        if member is not None:
            raise ValueError(
                f"--member applies to an ensemble run (train --ensemble M), but {run_dir} holds "
                "a single model; drop --member"
            )
        graphdef, params, model_config, _ = runs.load_run(run_dir)
        return (
            functools.partial(render.render, graphdef, params),
            model_config.components,
            ("this model"),
        )
    if member is not None:
        if member >= fit.size:
            raise ValueError(
                f"--member {member} does not exist: this ensemble has members 0..{fit.size - 1}"
            )
        components = fit.model_configs[member].components
        return (
            functools.partial(ensemble_render.render, fit, member=member),
            components,
            (f"member {member} of {fit.size}"),
        )
    components = ensemble_render.component_count(fit)
    return (
        functools.partial(ensemble_render.render, fit),
        components,
        (f"the ensemble of {fit.size} ({components} components together)"),
    )
