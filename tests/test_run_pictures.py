"""Labelled pictures: round ticks, captions, sorted component grid, fixed-scale uncertainty, and
`render --method sample --coherent` on the command line."""

import contextlib
import io

import imageio.v3 as iio
import jax
import numpy as np
import pytest

import mdn_jax
from mdn_jax import chart, cli, colours, data, layout, media, metrics, model, render, run_pictures

SIZE = 12


@pytest.fixture(scope="module")
def trained():
    images = data.demo_images(count=3, size=SIZE)
    xs, ys = data.image_pairs(images)
    config = model.ModelConfig(
        hidden=(16, 16),
        components=4,
        input_offset=data.IMAGE_INPUT_OFFSET,
        input_scale=data.IMAGE_INPUT_SCALE,
    )
    result = mdn_jax.fit(
        xs, ys, model_config=config, train_config=mdn_jax.TrainConfig(epochs=3, batch_size=32)
    )
    return result.graphdef, result.params, images


@pytest.mark.parametrize(
    "low, high, expected",
    [
        (-8.29, -4.67, [-9, -8, -7, -6, -5, -4]),
        (0.0, 0.5, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]),
        (1, 30, [0, 10, 20, 30]),
        (2.3, 2.31, [2.3, 2.302, 2.304, 2.306, 2.308, 2.31]),
        (-0.5, 1234.0, [-500, 0, 500, 1000, 1500]),
    ],
)
def test_nice_ticks_are_round_and_cover_the_range(low, high, expected):
    ticks = layout.nice_ticks(low, high)
    np.testing.assert_allclose(ticks, expected, atol=1e-9)
    assert ticks[0] <= low and ticks[-1] >= high
    step = ticks[1] - ticks[0]
    mantissa = step / 10 ** np.floor(np.log10(step))
    assert np.isclose(mantissa, [1, 2, 5]).any()
    assert layout.tick_label(0.30000000000000004, 0.1) == "0.3"
    with pytest.raises(ValueError, match="finite low < high"):
        layout.nice_ticks(1.0, 1.0)


def test_a_long_title_wraps_instead_of_being_cut():
    title = "training image | reconstruction (closest component per pixel), coverage PSNR"
    lines = layout.wrap_text(title, 300)
    assert " ".join(lines) == title and len(lines) >= 2
    assert all(layout.text_width(line) <= 300 for line in lines)
    strip = layout.caption(title, 300, wrap=True)
    assert strip.shape[0] == len(lines) * layout.caption("x", 300).shape[0]
    assert layout.caption(title, 300).shape == layout.caption("x", 300).shape  # labels: one line


@pytest.mark.parametrize(
    "length, expected",
    [(1, [1]), (3, [1, 2, 3]), (10, [2, 4, 6, 8, 10]), (100, [20, 40, 60, 80, 100])],
)
def test_epoch_ticks_are_whole_epochs(length, expected):
    assert chart.epoch_ticks(length).tolist() == expected


def test_line_chart_draws_every_series_and_gaps():
    chart_image = media.line_chart(
        {"training NLL": [3.0, 2.0, 1.5, float("nan"), 1.0], "held-out NLL": [3.2, 2.4, 2.0]},
        title="loss",
        ylabel="nats per pixel",
    )
    assert chart_image.shape == (400, 640, 3)
    pixels = np.round(chart_image * 255).astype(int).reshape(-1, 3)
    for colour in ((31, 119, 180), (255, 127, 14)):  # both series (lines and legend keys)
        assert np.sum(np.all(pixels == colour, axis=1)) > 50
    runs = chart._finite_runs(np.array([1.0, np.nan, 2.0, 3.0, np.inf, 4.0]))
    assert [list(r) for r in runs] == [[0], [2, 3], [5]]


def test_labelled_tiles_enlarge_small_images_and_caption_them():
    tiles = [np.full((SIZE, SIZE, 3), v, np.float32) for v in (0.0, 0.5)]
    picture = layout.labelled_tiles(tiles, ["k 0: 60.0%", "k 1: 40.0%"], columns=2, title="t")
    factor = -(-layout.MIN_TILE // SIZE)
    assert picture.shape[1] == 2 * SIZE * factor + 3 * 6
    # caption strips are white with dark text in them
    assert picture.min() == 0.0 and (picture < 0.3).mean() > 0.3
    with pytest.raises(ValueError, match="one label per image"):
        layout.labelled_tiles(tiles, ["only one"])


def test_components_picture_is_sorted_by_average_weight(trained):
    graphdef, params, _ = trained
    weights = run_pictures.average_weights(
        graphdef, params, height=SIZE, width=SIZE, pixels_per_chunk=7
    )
    mixture = model.apply(graphdef, params, data.pixel_grid(SIZE, SIZE))
    expected = np.mean(np.asarray(jax.nn.softmax(mixture.logits, axis=-1), np.float64), axis=0)
    np.testing.assert_allclose(weights, expected, rtol=1e-5)
    picture = run_pictures.components_picture(graphdef, params, height=SIZE, width=SIZE)
    # the first tile (under the title strip) is the heaviest component's mean, enlarged
    heaviest = int(np.argmax(weights))
    tile = render.render(
        graphdef, params, height=SIZE, width=SIZE, method="component", component=heaviest
    )
    factor = -(-layout.MIN_TILE // SIZE)
    title = layout.caption(run_pictures.COMPONENTS_TITLE, picture.shape[1], wrap=True)
    top = title.shape[0] + 6  # the title wraps onto as many lines as the grid's width needs
    np.testing.assert_allclose(
        picture[top : top + SIZE * factor : factor, 6 : 6 + SIZE * factor : factor], tile, atol=1e-6
    )


def test_uncertainty_uses_one_fixed_scale(trained):
    graphdef, params, _ = trained
    values = render.render_values(graphdef, params, height=SIZE, width=SIZE, method="uncertainty")
    shown = render.render(graphdef, params, height=SIZE, width=SIZE, method="uncertainty")
    np.testing.assert_allclose(shown, colours.heat_colours(values, vmax=0.5), atol=1e-6)
    # the same deviation gets the same colour in any picture, whatever that picture's maximum
    a = colours.heat_colours(np.array([0.1, 0.2]), vmax=colours.UNCERTAINTY_MAX)
    b = colours.heat_colours(np.array([0.1, 0.45]), vmax=colours.UNCERTAINTY_MAX)
    np.testing.assert_array_equal(a[0], b[0])
    picture = run_pictures.uncertainty_picture(graphdef, params, height=SIZE, width=SIZE)
    assert picture.shape[0] >= 256 and picture.shape[1] > picture.shape[0]  # the bar on the right


def test_reconstruction_pictures_and_frames(trained):
    graphdef, params, images = trained
    picture, psnrs = run_pictures.reconstructions_picture(graphdef, params, images)
    assert len(psnrs) == 3 and picture.ndim == 3
    frame = run_pictures.reconstruction_frame(graphdef, params, images, label="epoch 3")
    plain = run_pictures.reconstruction_frame(graphdef, params, images)
    factor = -(-layout.MIN_FRAME_WIDTH // (3 * (SIZE + 2) + 2))  # small images are enlarged
    assert frame.shape[1] == plain.shape[1] == 3 * (SIZE * factor + 2) + 2
    np.testing.assert_array_equal(
        frame[2 : 2 + SIZE * factor : factor, 2 : 2 + SIZE * factor : factor], images[0]
    )
    later = run_pictures.reconstruction_frame(graphdef, params, images, label="epoch 10000")
    assert later.shape == frame.shape  # every frame of a GIF has the same size
    samples = run_pictures.samples_picture(
        graphdef, params, height=SIZE, width=SIZE, key=jax.random.key(0), num_samples=2
    )
    assert samples.ndim == 3


def _main(*args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as exit:
            code = exit.code
    return code, out.getvalue(), err.getvalue()


def test_cli_render_sample_coherent(tmp_path):
    path = tmp_path / "a.png"
    iio.imwrite(path, (data.demo_images(count=1, size=8)[0] * 255).astype(np.uint8))
    flags = ["--encoding", "identity", "--batch-size", "32", "--hidden", "8,8"]
    flags += ["--components", "2", "--no-progress"]
    code, _, err = _main("train", path, "--epochs", "1", *flags, "--out", tmp_path / "run")
    assert code == 0, err
    out = tmp_path / "coherent.png"
    code, stdout, err = _main(
        "render", tmp_path / "run", "--method", "sample", "--coherent", "--seed", "3", "--out", out
    )
    assert code == 0 and "wrote" in stdout, err
    from mdn_jax import runs

    graphdef, params, _, _ = runs.load_run(tmp_path / "run")
    expected = render.render(
        graphdef,
        params,
        height=8,
        width=8,
        method="sample",
        key=jax.random.key(3),
        coherent=True,
    )[0]
    np.testing.assert_array_equal(iio.imread(out), media.to_uint8(expected))
    code, _, err = _main("render", tmp_path / "run", "--coherent", "--out", tmp_path / "m.png")
    assert code == 2 and "--coherent applies to --method sample only" in err
    assert not (tmp_path / "m.png").exists()


def test_write_run_pictures_and_the_held_out_curve(trained, tmp_path):
    graphdef, params, images = trained
    history = [{"epoch": e, "loss": 2.0 - e, "held_out_nll": 2.5 - e} for e in (1, 2, 3)]
    psnrs = run_pictures.write_run_pictures(
        tmp_path, graphdef, params, images, history, key=jax.random.key(0), num_samples=2
    )
    assert psnrs == metrics.image_scores(graphdef, params, images)["coverage_psnr"]
    names = ["components.png", "loss.png", "reconstructions.png", "samples.png", "uncertainty.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # and no temporaries
    orange = (255, 127, 14)  # the second series' colour

    def has_orange(picture):
        pixels = np.round(picture * 255).astype(int).reshape(-1, 3)
        return np.sum(np.all(pixels == orange, axis=1)) > 20

    assert has_orange(run_pictures.loss_picture(history))
    assert not has_orange(run_pictures.loss_picture([{"epoch": 1, "loss": 1.0}, {"epoch": 2}]))


def test_heat_colours_of_a_diverged_model():
    values = np.array([np.nan, np.inf, 0.25, -np.inf])
    heat = colours.heat_colours(values, vmax=colours.UNCERTAINTY_MAX)
    np.testing.assert_array_equal(heat[0], colours.heat_colours(np.array([0.0]), vmax=0.5)[0])
    np.testing.assert_array_equal(heat[1], colours.heat_colours(np.array([0.5]), vmax=0.5)[0])
    assert np.isfinite(heat).all() and np.isfinite(colours.heat_colours(values)).all()
