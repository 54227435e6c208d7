"""The renderer: agrees with the forward pass, independent of chunking, bounded memory."""

import subprocess
import sys

import jax
import numpy as np
import pytest

import mdn_jax
from mdn_jax import data, media, model, render

HEIGHT, WIDTH = 23, 31  # odd sizes, so chunks never divide the image evenly


@pytest.fixture(scope="module", params=model.STRUCTURES)
def trained(request):
    """A small model with non-trivial weights (a few epochs on two tiny demo images)."""
    images = data.demo_images(count=2, size=12)
    xs, ys = data.image_pairs(images)
    config = model.ModelConfig(
        hidden=(16, 16),
        components=3,
        structure=request.param,
        input_offset=data.IMAGE_INPUT_OFFSET,
        input_scale=data.IMAGE_INPUT_SCALE,
    )
    result = mdn_jax.fit(
        xs, ys, model_config=config, train_config=mdn_jax.TrainConfig(epochs=3, batch_size=32)
    )
    return result.graphdef, result.params


def _direct(graphdef, params, height, width):
    return model.apply(graphdef, params, data.pixel_grid(height, width))


def test_mode_at_training_resolution_equals_direct_forward_pass(trained):
    graphdef, params = trained
    mixture = _direct(graphdef, params, HEIGHT, WIDTH)
    expected = np.asarray(mdn_jax.most_probable_mean(mixture)).reshape(HEIGHT, WIDTH, 3)
    got = render.render_values(
        graphdef, params, height=HEIGHT, width=WIDTH, method="mode", pixels_per_chunk=64
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    for method, function in [
        ("mean", mdn_jax.mean),
        ("uncertainty", lambda m: np.sqrt(np.mean(mdn_jax.variance(m), -1))),
    ]:
        got = render.render_values(
            graphdef, params, height=HEIGHT, width=WIDTH, method=method, pixels_per_chunk=100
        )
        np.testing.assert_allclose(
            got, np.asarray(function(mixture)).reshape(got.shape), rtol=1e-4, atol=1e-6
        )
    winners = render.render_values(
        graphdef, params, height=HEIGHT, width=WIDTH, method="components"
    )
    agree = winners.ravel() == np.asarray(mdn_jax.most_probable_component(mixture))
    assert agree.mean() > 0.99  # ties at 1-ulp input differences are the only allowed disagreement
    component = render.render_values(
        graphdef, params, height=HEIGHT, width=WIDTH, method="component", component=2
    )
    np.testing.assert_allclose(
        component.reshape(-1, 3),
        np.asarray(mdn_jax.component_means(mixture))[:, 2],
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("method", render.METHODS)
def test_chunk_size_never_changes_the_result(trained, method):
    graphdef, params = trained
    if model.config_of(graphdef, params).structure != "joint" and method not in ("mode", "sample"):
        pytest.skip(
            "every method is checked on joint; per_dim and full check mode and sample (suite time)"
        )
    # 97 x 131 = 12,707 pixels: requested chunks of 1 and 9,000 pixels become 4 and 2 compiled
    # chunks (rounded up to whole tiles of 4,096, the last one padded), against one for the image.
    assert render.TILE == 4096
    options = dict(
        height=97, width=131, method=method, key=jax.random.key(7), num_samples=2, component=1
    )
    reference = render.render_values(graphdef, params, pixels_per_chunk=97 * 131, **options)
    for chunk in (1, 9000):
        np.testing.assert_array_equal(
            render.render_values(
                graphdef, params, pixels_per_chunk=chunk, **options
            ),  # chunk={chunk}
            reference,
        )


def test_sample_with_zero_temperatures_equals_mode(trained):
    graphdef, params = trained
    if model.config_of(graphdef, params).structure == "per_dim":
        pytest.skip("per_dim samples pick each channel's own heaviest component (documented)")
    mode = render.render_values(graphdef, params, height=HEIGHT, width=WIDTH, method="mode")
    for temperature in (0.0, 1e-6):
        draws = render.render_values(
            graphdef,
            params,
            height=HEIGHT,
            width=WIDTH,
            method="sample",
            key=jax.random.key(0),
            num_samples=3,
            temperature=temperature,
            sigma_temperature=0.0,
        )
        for draw in draws:
            np.testing.assert_allclose(draw, mode, rtol=1e-6, atol=1e-6)


def test_samples_differ_across_keys_and_draws_and_repeat_for_a_key(trained):
    graphdef, params = trained
    options = dict(height=HEIGHT, width=WIDTH, method="sample", num_samples=2)
    a = render.render_values(graphdef, params, key=jax.random.key(1), **options)
    b = render.render_values(graphdef, params, key=jax.random.key(1), **options)
    c = render.render_values(graphdef, params, key=jax.random.key(2), **options)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a[0], a[1])
    assert a.shape == (2, HEIGHT, WIDTH, 3)


def test_render_at_another_resolution_uses_the_training_frame(trained):
    graphdef, params = trained
    big = render.render_values(graphdef, params, height=2 * HEIGHT, width=2 * WIDTH, method="mean")
    assert big.shape == (2 * HEIGHT, 2 * WIDTH, 3) and np.all(np.isfinite(big))
    # Pixel centres of the doubled grid straddle the original ones: the average of each 2x2
    # block is close to the original render for a smooth network.
    small = render.render_values(graphdef, params, height=HEIGHT, width=WIDTH, method="mean")
    blocks = big.reshape(HEIGHT, 2, WIDTH, 2, 3).mean(axis=(1, 3))
    assert np.abs(blocks - small).mean() < 0.02


def test_colour_outputs_are_displayable(trained):
    graphdef, params = trained
    for method in render.METHODS:
        image = render.render(
            graphdef, params, height=8, width=9, method=method, key=jax.random.key(0)
        )
        image = image[0] if method == "sample" else image
        assert image.shape == (8, 9, 3) and image.dtype == np.float32
        assert np.all((image >= 0) & (image <= 1))


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(method="blur"), "unknown render method"),
        (dict(height=0), "height"),
        (dict(component=3, method="component"), "component"),
        (dict(pixels_per_chunk=0), "pixels_per_chunk"),
        (dict(method="sample"), "random key"),
    ],
)
def test_bad_render_arguments_are_refused(trained, bad, message):
    graphdef, params = trained
    options = dict(height=4, width=4) | bad
    with pytest.raises(ValueError, match=message):
        render.render_values(graphdef, params, **options)


def test_heat_and_component_colours():
    heat = render.heat_colours(np.array([0.0, 0.5, 1.0]))
    assert heat.shape == (3, 3) and heat[0].sum() < 0.1 and heat[-1].sum() > 2.5
    colours = render.component_colours(25)
    assert len({tuple(c) for c in np.round(colours, 3)}) == 25


# Peak resident memory of this process alone. Not ru_maxrss: Linux carries the parent's peak
# across fork and exec into it, so a child of a big pytest process would report the parent's.
PEAK_MB = """
def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""


def test_2048_render_peak_memory_stays_well_under_2_gb(tmp_path):
    """A 2048x2048 mode render of the reference network in a fresh process: peak RSS < 1 GB."""
    script = (
        PEAK_MB
        + """
import jax, numpy as np
from mdn_jax import model, render, data
config = model.ModelConfig(
    components=10, input_offset=data.IMAGE_INPUT_OFFSET, input_scale=data.IMAGE_INPUT_SCALE
)
graphdef, params = model.init(config, key=jax.random.key(0))
image = render.render(graphdef, params, height=2048, width=2048, method="mode")
assert image.shape == (2048, 2048, 3)
print(peak_mb())
"""
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    peak_mb = float(done.stdout.strip().splitlines()[-1])
    assert peak_mb < 1024, f"peak memory {peak_mb:.0f} MB"


def test_media_grid_gif_and_png_are_written_atomically(tmp_path):
    images = data.demo_images(count=3, size=16)
    canvas = media.grid(list(images), columns=2, pad=2)
    assert canvas.shape == (2 * 18 + 2, 2 * 18 + 2, 3)
    png = media.save_png(tmp_path / "grid.png", canvas)
    frames = [media.montage_frame(images, images[i], label=f"epoch {i}") for i in range(3)]
    gif = media.save_gif(tmp_path / "montage.gif", frames)
    import imageio.v3 as iio

    assert iio.imread(png).shape == canvas.shape
    assert iio.imread(gif).shape[0] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "grid.png",
        "montage.gif",
    ]  # no temporaries left
    chart = media.line_chart({"loss": [3.0, 2.0, 1.5, float("nan"), 1.0]})
    assert chart.shape == (400, 640, 3) and chart.min() < 0.5
