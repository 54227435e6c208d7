"""Training throughput, side by side in one run on one device.

The reference workload: 81,920 (row, column) -> RGB pairs from the five built-in 128x128 demo
images, a joint mixture with K=10 over D=3, Adam at 1e-3, reshuffled every epoch. Contenders:

  scan        mdn_jax as a user gets it: the default model (scales exp(raw) + floor) and
              `Trainer.epoch`, one jitted lax.scan per epoch over device-resident data
  step-loop   the same model and jitted step driven by a Python loop, one call per batch
              (Trainer.step on numpy-sliced batches: what most JAX code does)
  mse-scan    the same trunk, the same pure forward (mdn_jax.forward) and scanned epoch trained
              with plain squared error on a one-component head's mean: what the mixture
              likelihood costs on top of the trunk
  scan-softplus     `scan` with scale_activation='softplus', the head before the fast step
  scan-closed-form  `scan` with the closed-form gradients of mdn_jax.fastgrad switched on
              (step.CLOSED_FORM_BACKENDS; off by default where autodiff measured faster)
  scan-other-guard  `scan` with the non-finite guard in the form this backend does not use
              (`backend_tuning.guard_as_branch`: a select on CPU, a lax.cond branch elsewhere)
  handwritten-scan  a hand-written ~80-line JAX MDN without mdn_jax (Flax Linen, optax.adam,
              log-sigma heads, one lax.scan per epoch over device-resident data, donated state,
              host-side numpy permutation; see contenders.py)
  handwritten-scan-tuned  the same hand-written scan compiled with mdn_jax's compiler options
              for this backend (`mdn_jax.backend_tuning`), to show what they alone are worth
  handwritten-loop  the same model's jitted step driven by a Python loop on numpy batches
  keras       keras-mdn-layer on Keras 3 with the JAX backend, `fit` as its README shows
              (only when installed: pip install keras keras-mdn-layer)
  torch       an idiomatic PyTorch eager MDN, same architecture, Adam and batch order, on CUDA
              when torch sees a GPU (only when torch is installed: pip install torch); on a GPU
              host without CUDA torch it is skipped, never run silently on the CPU

Each measurement is one epoch (or, for the slow cases in the quick run, a fixed number of
batches); contenders alternate (A B C D A B C D ...), compilation is excluded and reported on
its own, and the figures are medians. Prints JSON lines, then a markdown table of samples/s and
ratios against the scanned epoch.

    python benchmarks/train_throughput.py            # quick (about a minute on 2 CPU cores)
    python benchmarks/train_throughput.py --full     # more repeats, full epochs everywhere
    python benchmarks/train_throughput.py --cases ref200 --steps 20 --repeats 1   # smoke test
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import contenders as others  # noqa: E402

from mdn_jax import backend_tuning, data, model, step, train  # noqa: E402
from mdn_jax.config import REFERENCE_TRUNK  # noqa: E402

ALL_CONTENDERS = (
    "scan",
    "step-loop",
    "mse-scan",
    "scan-softplus",
    "scan-closed-form",
    "scan-other-guard",
    "handwritten-scan",
    "handwritten-scan-tuned",
    "handwritten-loop",
    "keras",
    "torch",
)
WIDE_TRUNK = (512, 512, 512, 512)


def mse_loss(mixture, y):
    """Squared error of a one-component model's mean: the trunk with a plain 3-output head."""
    return jnp.mean(jnp.sum(jnp.square(mixture.means[..., 0, :] - y), axis=-1))


def jax_contenders(xs, ys, *, hidden, batch_size, steps, wanted=ALL_CONTENDERS, seed=0):
    """Callables that each train `steps` batches of `batch_size` and block until done."""
    n = xs.shape[0]
    xs_device, ys_device = jax.device_put(xs), jax.device_put(ys)
    contenders, compile_seconds = {}, {}

    def make(components, loss, name, **fields):
        config = model.ModelConfig(
            hidden=hidden,
            components=components,
            input_offset=data.IMAGE_INPUT_OFFSET,
            input_scale=data.IMAGE_INPUT_SCALE,
            scale_floor=0.01,
            **fields,
        )
        graphdef, params = model.init(config, key=jax.random.key(seed))
        trainer = train.Trainer(
            graphdef, train.make_optimizer(train.TrainConfig(), total_steps=1), loss=loss
        )
        return trainer, trainer.init(params, key=jax.random.key(seed + 1))

    def batches(key):
        return train.shuffled_batches(key, n, batch_size)[:steps]

    def scanned(trainer, state, name):
        holder = {"state": state, "key": jax.random.key(seed + 2)}

        def run():
            holder["key"], key = jax.random.split(holder["key"])
            holder["state"], losses = trainer.epoch(
                holder["state"], xs_device, ys_device, batches(key)
            )
            losses.block_until_ready()

        compile_seconds[name] = common.timed(run)
        return run

    trainer, state = make(10, train.nll_loss, "scan")
    contenders["scan"] = scanned(trainer, state, "scan")
    if "scan-softplus" in wanted:
        trainer, state = make(10, train.nll_loss, "scan-softplus", scale_activation="softplus")
        contenders["scan-softplus"] = scanned(trainer, state, "scan-softplus")
    other_guard = not backend_tuning.guard_as_branch()
    switched = {  # name: (module, attribute, value while compiling; restored after)
        "scan-closed-form": (step, "CLOSED_FORM_BACKENDS", frozenset({jax.default_backend()})),
        "scan-other-guard": (backend_tuning, "guard_as_branch", lambda: other_guard),
    }
    for name, (module, attribute, value) in switched.items():
        if name in wanted:
            trainer, state = make(10, train.nll_loss, name)
            default = getattr(module, attribute)
            setattr(module, attribute, value)  # read when compiling: `scanned`'s first call
            try:
                contenders[name] = scanned(trainer, state, name)
            finally:
                setattr(module, attribute, default)

    if "step-loop" in wanted:
        contenders["step-loop"] = step_loop(make(10, train.nll_loss, "step-loop"), batches, xs, ys)
        compile_seconds["step-loop"] = common.timed(contenders["step-loop"])
    if "mse-scan" not in wanted:
        return contenders, compile_seconds
    mse_trainer, mse_state = make(1, mse_loss, "mse-scan")
    contenders["mse-scan"] = scanned(mse_trainer, mse_state, "mse-scan")
    return contenders, compile_seconds


def step_loop(trainer_and_state, batches, xs, ys, *, seed=0):
    """`Trainer.step` driven by a Python loop on numpy-sliced batches, one call per batch."""
    trainer, state = trainer_and_state
    holder = {"state": state, "key": jax.random.key(seed + 2)}

    def looped():
        holder["key"], key = jax.random.split(holder["key"])
        state = holder["state"]
        for indices in batches(key):
            state, loss = trainer.step(state, xs[indices], ys[indices])
        loss.block_until_ready()
        holder["state"] = state

    return looped


def outside_contenders(xs, ys, *, hidden, batch_size, steps, wanted):
    """The MDNs written without mdn_jax (contenders.py), warmed up:
    `(contenders, compile_seconds)`."""
    normalised = ((xs - np.asarray(data.IMAGE_INPUT_OFFSET)) / data.IMAGE_INPUT_SCALE).astype(
        np.float32
    )
    factories = {
        "handwritten-scan": others.handwritten_scan,
        "handwritten-scan-tuned": functools.partial(
            others.handwritten_scan, options=backend_tuning.compiler_options()
        ),
        "handwritten-loop": others.handwritten_loop,
    }
    if others.keras_available():
        factories["keras"] = others.keras_fit
    elif "keras" in wanted:
        print(
            "keras-mdn-layer not installed: skipping it (pip install keras keras-mdn-layer)",
            file=sys.stderr,
        )
    contenders, compile_seconds = {}, {}
    for name, factory in factories.items():
        if name in wanted:
            run = factory(normalised, ys, hidden=hidden, batch_size=batch_size, steps=steps)
            compile_seconds[name] = common.timed(run)  # first call: compilation and one run
            contenders[name] = run
    return contenders, compile_seconds


def torch_contender(xs, ys, *, hidden, batch_size, steps, components=10, seed=0):
    """An idiomatic PyTorch eager MDN (joint diagonal mixture), or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and jax.default_backend() != "cpu":
        print(
            f"torch has no CUDA while JAX runs on {jax.default_backend()}: skipping the PyTorch "
            "baseline rather than timing it on the CPU (install a CUDA build of torch)",
            file=sys.stderr,
        )
        return None
    torch.manual_seed(seed)
    d = ys.shape[1]
    layers, width = [], xs.shape[1]
    for h in hidden:
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
        width = h
    trunk = torch.nn.Sequential(*layers)
    head = torch.nn.Linear(width, components + 2 * components * d)
    net = torch.nn.ModuleDict({"trunk": trunk, "head": head}).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    xs_t = ((torch.from_numpy(xs) - 0.5) / 0.5).to(device)
    ys_t = torch.from_numpy(ys).to(device)
    n = xs.shape[0]
    key = {"key": jax.random.key(seed + 2)}

    def nll(x, y):
        raw = head(trunk(x))
        logits, means, scales = torch.split(
            raw, [components, components * d, components * d], dim=-1
        )
        means = means.view(-1, components, d)
        scales = torch.nn.functional.softplus(scales.view(-1, components, d)) + 0.01
        z = (y[:, None, :] - means) / scales
        component_lp = (-0.5 * z * z - torch.log(scales) - 0.9189385332046727).sum(-1)
        return -torch.logsumexp(torch.log_softmax(logits, -1) + component_lp, -1).mean()

    def run():
        key["key"], epoch_key = jax.random.split(key["key"])
        for indices in train.shuffled_batches(epoch_key, n, batch_size)[:steps]:
            index = torch.from_numpy(indices.astype(np.int64)).to(device)
            loss = nll(xs_t[index], ys_t[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()

    return run, f"{torch.__version__} on {device}", torch.get_num_threads()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--full", action="store_true", help="full epochs everywhere and more repeats"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per contender")
    parser.add_argument(
        "--cases", default="all", help="comma-separated subset of: ref200, ref4096, wide4096"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="batches per timed repeat (default: one epoch)"
    )
    parser.add_argument(
        "--contenders",
        default="all",
        help="comma-separated subset of: " + ", ".join(ALL_CONTENDERS) + " (scan, the "
        "reference of the ratios, always runs)",
    )
    args = parser.parse_args(argv)
    wanted = set(ALL_CONTENDERS if args.contenders == "all" else args.contenders.split(","))
    wanted.add("scan")
    repeats = args.repeats or (7 if args.full else 3)
    xs, ys = data.image_pairs(data.demo_images(count=5, size=128))
    n = xs.shape[0]
    env = common.environment()
    common.emit({"kind": "environment", **env})
    cases = {
        "ref200": (REFERENCE_TRUNK, 200),
        "ref4096": (REFERENCE_TRUNK, 4096),
        "wide4096": (WIDE_TRUNK, 4096),
    }
    chosen = list(cases) if args.cases == "all" else args.cases.split(",")
    rows = []
    for case in chosen:
        hidden, batch_size = cases[case]
        full_steps = train.steps_per_epoch(n, batch_size)
        steps = full_steps if (args.full or case != "wide4096") else 6
        steps = min(steps, args.steps or steps)
        contenders, compile_seconds = jax_contenders(
            xs, ys, hidden=hidden, batch_size=batch_size, steps=steps, wanted=wanted
        )
        contenders = {name: run for name, run in contenders.items() if name in wanted}
        outside, outside_compile = outside_contenders(
            xs, ys, hidden=hidden, batch_size=batch_size, steps=steps, wanted=wanted
        )
        contenders.update(outside)
        compile_seconds.update(outside_compile)
        torch_run = None
        if "torch" in wanted:
            torch_run = torch_contender(xs, ys, hidden=hidden, batch_size=batch_size, steps=steps)
        torch_note = ""
        if torch_run is not None:
            run, torch_version, threads = torch_run
            run()  # warm-up
            contenders["torch"] = run
            torch_note = f"torch {torch_version}, {threads} threads"
        elif "torch" in wanted:
            print("no PyTorch baseline (see above, or: pip install torch)", file=sys.stderr)
        times = common.alternate(contenders, repeats=repeats)
        samples = steps * batch_size
        speed = {name: samples / common.median(values) for name, values in times.items()}
        for name, value in speed.items():
            common.emit(
                {
                    "kind": "train",
                    "case": case,
                    "hidden": list(hidden),
                    "batch_size": batch_size,
                    "contender": name,
                    "samples_per_second": round(value),
                    "steps_timed": steps,
                    "repeats": repeats,
                    "ratio_scan_over_this": round(speed["scan"] / value, 3),
                    "compile_seconds": round(compile_seconds.get(name, 0.0), 2),
                    "note": torch_note if name == "torch" else "",
                    **env,
                }
            )
            rows.append(
                [case, batch_size, name, f"{value / 1e3:.0f}k", f"{speed['scan'] / value:.2f}x"]
            )
    print()
    print(
        f"Training samples/s on {env['device']} "
        f"(JAX {env['jax']}, Flax {env['flax']}, Optax {env['optax']}); "
        f"median of {repeats}; ratio = scan / contender (>1: scan is faster)"
    )
    print()
    print(common.markdown_table(["case", "batch", "contender", "samples/s", "scan speed-up"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
