"""An ensemble run folder's pictures (mdn_jax.ensemble_pictures): written as PNGs of the expected
grid, their contents against float64 references computed from each member alone, and a picture
that cannot be made is skipped without costing the run."""

import contextlib
import io
import json

import imageio.v3 as iio
import numpy as np
import pytest

from mdn_jax import cli, colours, ensemble_pictures, ensemble_runs, layout, reconstruct
from mdn_jax import data as dt
from mdn_jax import mixture as mx

M, SIZE = 2, 8
SMALL = ("--components", "3", "--batch-size", "32", "--no-progress", "--hidden", "8,8")
NAMES = ("reconstructions.png", "uncertainty.png", "loss.png")


def _main(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as exit:
            code = exit.code
    return code, out.getvalue(), err.getvalue()


def _image_files(folder):
    paths = []
    for seed in range(2):
        pixels = np.random.default_rng(seed).integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
        iio.imwrite(folder / f"im{seed}.png", pixels)
        paths.append(folder / f"im{seed}.png")
    return paths


def _train(folder, run):
    return _main(
        "train", *_image_files(folder), "--out", run, *SMALL, "--epochs", 2, "--ensemble", M
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished 2-member ensemble run on two 8x8 images: (folder, images, code, out, err)."""
    folder = tmp_path_factory.mktemp("ensemble_pictures")
    code, out, err = _train(folder, folder / "run")
    images = np.stack([iio.imread(p) for p in sorted(folder.glob("im*.png"))]) / 255.0
    return folder / "run", images.astype(np.float32), code, out, err


def _tiles(picture, *, rows, columns, image_size):
    """The enlarged images of a `layout.labelled_tiles` grid (pad 6, one caption line a tile),
    each shrunk back by its whole enlargement factor: `[rows, columns, S, S, 3]` uint8."""
    height, width = picture.shape[:2]
    assert (width - 6) % columns == 0
    tile_w = (width - 6) // columns - 6
    assert tile_w % image_size == 0 and tile_w >= layout.MIN_TILE
    factor = tile_w // image_size
    tile_h = tile_w + int(round(layout.TEXT_SIZE * 1.5))
    title = height - (rows * (tile_h + 6) + 6)
    assert title > 0 and title % int(round(layout.TEXT_SIZE * 1.5)) == 0  # whole title lines
    grid = np.empty((rows, columns, image_size, image_size, 3), np.uint8)
    for r in range(rows):
        for c in range(columns):
            top, left = title + 6 + r * (tile_h + 6), 6 + c * (tile_w + 6)
            tile = picture[top : top + tile_w, left : left + tile_w]
            # Every enlarged pixel is one flat block: the tile is exactly where the grid says.
            blocks = tile.reshape(image_size, factor, image_size, factor, 3)
            assert (blocks == blocks[:, :1, :, :1]).all()
            grid[r, c] = blocks[:, 0, :, 0]
    return grid


def _closest_means(fit, images):
    """float64 reference: per pixel the closest of all members' component means (clipped), each
    member's mixture computed alone: `(ensemble [N, H, W, 3], members [M, N, H, W, 3])`."""
    positions = dt.pixel_grid(SIZE, SIZE)
    means = np.stack(
        [
            np.clip(
                np.asarray(mx.component_means(fit.member(m).predict(positions)), np.float64), 0, 1
            )
            for m in range(fit.size)
        ]
    )  # [M, P, K, D]
    colours_ = images.reshape(len(images), -1, 3).astype(np.float64)  # [N, P, D]
    errors = np.sum((means[:, None] - colours_[None, :, :, None]) ** 2, axis=-1)  # [M, N, P, K]
    members = np.take_along_axis(means[:, None], errors.argmin(-1)[..., None, None], axis=3)
    members = members[..., 0, :]  # [M, N, P, D]
    flat = np.moveaxis(errors, 0, -2).reshape(*errors.shape[1:3], -1)  # [N, P, M*K], member-major
    all_means = np.moveaxis(means, 0, 1).reshape(means.shape[1], -1, 3)  # [P, M*K, D]
    ensemble = all_means[np.arange(flat.shape[1])[None], flat.argmin(-1)]  # [N, P, D]
    shape = images.shape
    return ensemble.reshape(shape), members.reshape((fit.size,) + shape)


def test_ensemble_run_writes_each_picture_and_says_so(run):
    folder, _, code, out, err = run
    assert code == 0, err
    assert "reconstructions.png (the ensemble and each member), uncertainty.png, loss.png" in out
    for name in NAMES:
        picture = iio.imread(folder / name)
        assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3, name
    assert "skipped_pictures" not in json.loads((folder / "metrics.json").read_text())
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_reconstructions_show_each_image_the_ensemble_and_each_member(run):
    folder, images, *_ = run
    fit = ensemble_runs.load_ensemble_run(folder)
    picture = iio.imread(folder / "reconstructions.png")
    grid = _tiles(picture, rows=len(images), columns=M + 2, image_size=SIZE)
    ensemble, members = _closest_means(fit, images)
    for n in range(len(images)):
        np.testing.assert_array_equal(grid[n, 0], np.round(images[n] * 255))  # the original
        np.testing.assert_allclose(grid[n, 1], ensemble[n] * 255, atol=1.01)
        for m in range(M):
            np.testing.assert_allclose(grid[n, 2 + m], members[m, n] * 255, atol=1.01)
    # The members differ (seeds 0 and 1), and the ensemble's panel is neither member's alone.
    assert not np.array_equal(grid[:, 2], grid[:, 3])
    assert not np.array_equal(grid[:, 1], grid[:, 2]) and not np.array_equal(grid[:, 1], grid[:, 3])
    found = ensemble_pictures.reconstructions(fit, images)
    for m in range(M):  # the member panels are a single run's reconstructions of that member
        own = fit.member(m)
        pictures, psnrs = reconstruct.reconstructions(own.graphdef, own.params, images)
        np.testing.assert_array_equal(found["members"][m], pictures)
        assert found["member_psnrs"][m] == psnrs
    mse = np.mean((ensemble - images) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(found["ensemble_psnrs"], 10 * np.log10(1 / mse), atol=2e-3)
    assert np.all(np.asarray(found["ensemble_psnrs"]) >= np.max(found["member_psnrs"], axis=0))


def test_uncertainty_is_the_ensembles_predictive_std_on_the_fixed_scale(run):
    folder, images, *_ = run
    fit = ensemble_runs.load_ensemble_run(folder)
    picture = iio.imread(folder / "uncertainty.png")
    factor = -(-256 // SIZE)
    side = SIZE * factor
    title = picture.shape[0] - side  # the colour bar is exactly as tall as the image
    assert title > 0 and picture.shape[1] > side
    image = picture[title : title + side, :side].reshape(SIZE, factor, SIZE, factor, 3)[:, 0, :, 0]
    # Law of total variance over the members, each member's mixture alone, in float64.
    positions = dt.pixel_grid(SIZE, SIZE)
    mixtures = [fit.member(m).predict(positions) for m in range(M)]
    mean = np.stack([np.asarray(mx.mean(x), np.float64) for x in mixtures])  # [M, P, D]
    var = np.stack([np.asarray(mx.variance(x), np.float64) for x in mixtures])
    total = np.mean(var + mean**2, axis=0) - np.mean(mean, axis=0) ** 2  # [P, D]
    std = np.sqrt(total.mean(axis=-1)).reshape(SIZE, SIZE)
    expected = colours.heat_colours(std, vmax=colours.UNCERTAINTY_MAX) * 255
    np.testing.assert_allclose(image, expected, atol=1.01)


def test_loss_chart_has_one_curve_per_member_and_the_held_out_curve_when_recorded(run):
    folder, *_ = run
    picture = iio.imread(folder / "loss.png")
    assert picture.shape == (400, 640, 3)

    def has(picture, colour):
        return bool(np.all(picture == colour, axis=-1).any())

    blue, orange, green = (31, 119, 180), (255, 127, 14), (44, 160, 44)  # series 1, 2, 3
    assert has(picture, blue) and has(picture, orange) and not has(picture, green)
    history = [
        {"member_losses": [1.0 - 0.1 * e, 1.2 - 0.1 * e], "held_out_nll": 1.3 - 0.1 * e}
        for e in range(3)
    ]
    chart = np.round(ensemble_pictures.loss_picture(history) * 255).astype(np.uint8)
    assert has(chart, green)  # the held-out curve, after the two members'
    many = [{"member_losses": list(np.linspace(1, 2, 20) + e)} for e in range(3)]
    assert ensemble_pictures.loss_picture(many).shape[0] > 400  # room for a legend of 20


def test_a_picture_that_fails_is_skipped_with_one_line_and_the_metrics_are_kept(
    tmp_path, monkeypatch
):
    def broken(*args, **kwargs):
        raise RuntimeError("forced for the test")

    monkeypatch.setattr(ensemble_pictures, "uncertainty_picture", broken)
    run = tmp_path / "run"
    code, out, err = _train(tmp_path, run)
    assert code == 4, err  # trained and saved, a picture missing (README: exit codes)
    warnings = [line for line in err.splitlines() if line.startswith("mdn-jax: warning:")]
    assert warnings == [
        "mdn-jax: warning: uncertainty.png skipped: RuntimeError: forced for the test; "
        "the run is saved"
    ]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["skipped_pictures"] == ["uncertainty.png"]
    assert np.isfinite(metrics["ensemble"]["nll_nats"]) and len(metrics["members"]) == M
    assert (run / "reconstructions.png").is_file() and (run / "loss.png").is_file()
    assert not (run / "uncertainty.png").exists()
    assert not [p for p in run.iterdir() if p.name.startswith(".")]
